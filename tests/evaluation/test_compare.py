"""`pipeline.evaluation.compare` and `compare`: evaluations of the same NIH test images side by side."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import TEST_LABELS, assert_one_line_error, run_main, strict_json, write_predictions

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import compare, results


def test_compare_table_and_json(evaluated, second, capsys):
    first, _ = evaluated
    code, table, _ = run_main(capsys, "compare", first, second, "--bootstrap", "200")
    assert code == 0
    assert f"reference: {first}" in table and "DeLong p" in table
    assert all(finding in table for finding in FINDINGS) and "\nmean " in table

    code, out, _ = run_main(capsys, "compare", first, second, "--bootstrap", "200", "--json")
    assert code == 0
    result = json.loads(out, parse_constant=lambda name: pytest.fail(name))
    assert result["n_images"] == 55 and result["reference"] == str(first)
    (comparison,) = result["comparisons"]
    reference_auc, other_auc = strict_json(first / "metrics.json")["auc"], strict_json(second / "metrics.json")["auc"]
    for finding, row in comparison["findings"].items():
        assert row["auc_reference"] == pytest.approx(reference_auc[finding], abs=1e-12)
        assert row["auc"] == pytest.approx(other_auc[finding], abs=1e-12)
        assert row["difference"] == pytest.approx(row["auc"] - row["auc_reference"], abs=1e-12)
        assert row["difference_ci"][0] <= row["difference"] <= row["difference_ci"][1]
        if finding == "Edema":  # a single positive image: DeLong has no variance estimate
            assert row["p_value"] is None
        else:
            assert 0 <= row["p_value"] <= 1
    mean = comparison["mean"]
    assert mean["difference"] == pytest.approx(mean["auc"] - mean["auc_reference"])
    assert mean["difference_ci"][0] <= mean["difference"] <= mean["difference_ci"][1]
    assert mean["n_findings"] == 14


def test_compare_with_itself_finds_no_difference(evaluated):
    first, _ = evaluated
    result = compare.compare([first, first], n_bootstrap=30, seed=0)
    for finding, row in result["comparisons"][0]["findings"].items():
        assert row["difference"] == 0 and row["difference_ci"] == [0.0, 0.0]
        assert row["p_value"] == (None if finding == "Edema" else 1.0)  # one positive: no DeLong variance
    frame = compare.comparison_frame(result)
    assert len(frame) == len(FINDINGS) + 1 and frame["finding"].iloc[-1] == "mean"


def test_compare_refuses_different_label_files(evaluated, tmp_path, capsys):
    first, _ = evaluated
    subset = pd.read_csv(TEST_LABELS).iloc[:40]
    subset.to_csv(tmp_path / "subset.csv", index=False)
    predictions = write_predictions(tmp_path / "subset.csv", tmp_path / "preds.csv")
    out = tmp_path / "eval-subset"
    argv = ["evaluate", "--predictions", predictions, "--labels", tmp_path / "subset.csv", "--out", out]
    assert run_main(capsys, *argv, "--bootstrap", "0")[0] == 0
    code, stdout, err = run_main(capsys, "compare", first, out)
    assert_one_line_error(code, err, "different label files")
    assert stdout == ""


def test_compare_refuses_different_images_with_the_same_labels_file(evaluated, tmp_path, capsys):
    first, _ = evaluated
    tampered = tmp_path / "tampered"
    shutil.copytree(first, tampered)
    for name in ("labels.csv", "predictions.csv"):  # as if two images had been unreadable
        table = pd.read_csv(tampered / name)
        table.iloc[2:].to_csv(tampered / name, index=False)
    code, _, err = run_main(capsys, "compare", first, tampered)
    assert_one_line_error(code, err, "different images", "2 only in eval-a")


def test_compare_needs_two_evaluation_folders(evaluated, tmp_path, capsys):
    first, _ = evaluated
    assert_one_line_error(*run_main(capsys, "compare", first)[::2], "at least two")
    assert_one_line_error(*run_main(capsys, "compare", first, tmp_path)[::2], "not an evaluation folder")
    with pytest.raises(InputError):
        results.read_evaluation(tmp_path)
