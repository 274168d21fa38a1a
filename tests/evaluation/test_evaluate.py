"""`python -m pipeline evaluate` on the real NIH test split, with predictions written here.

The helpers and the `evaluated` fixture are in conftest.py; `compare` is tests/evaluation/test_compare.py.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import (
    FILES,
    IMAGES,
    REPO,
    TEST_LABELS,
    VALID_LABELS,
    assert_one_line_error,
    run_main,
    strict_json,
    write_predictions,
)
from sklearn import metrics as sk

from pipeline.core.findings import FINDINGS
from pipeline.evaluation import metrics, results

# --- evaluate --------------------------------------------------------------------------------------------------


def test_evaluate_writes_every_file_and_the_metrics_match_sklearn(evaluated):
    out, predictions_csv = evaluated
    assert {p.name for p in out.iterdir()} == FILES  # and no temporary files left behind
    summary = strict_json(out / "metrics.json")
    labels = pd.read_csv(TEST_LABELS)
    scores = pd.read_csv(predictions_csv)
    assert summary["n_images"] == 55 and summary["findings"] == list(FINDINGS)
    assert summary["labels_sha256"] == hashlib.sha256(TEST_LABELS.read_bytes()).hexdigest()
    assert summary["checkpoint"] is None and summary["labels_file"].endswith("test.csv")
    assert "checkpoint_sha256" not in summary  # a predictions file names no weights
    assert summary["threshold_source"] == "default_0.5" and set(summary["thresholds"].values()) == {0.5}
    assert summary["bootstrap"]["n_resamples"] == 300 and summary["created"]
    for finding in FINDINGS:
        y, s = labels[finding].to_numpy(), scores[finding].to_numpy()
        assert summary["auc"][finding] == pytest.approx(sk.roc_auc_score(y, s), abs=1e-9)
        assert summary["average_precision"][finding] == pytest.approx(sk.average_precision_score(y, s), abs=1e-9)
        assert summary["brier"][finding] == pytest.approx(sk.brier_score_loss(y, s), abs=1e-9)
        assert summary["n_positive"][finding] == y.sum() and summary["prevalence"][finding] == pytest.approx(y.mean())
        low, high = summary["auc_ci"][finding]
        assert low <= summary["auc"][finding] <= high
        point = summary["at_threshold"][finding]
        assert point["tp"] + point["fp"] + point["tn"] + point["fn"] == 55
        assert point["tp"] == int(((s >= 0.5) & (y == 1)).sum())
        assert sum(summary["calibration"][finding]["count"]) == 55
    assert summary["mean_auc"] == pytest.approx(np.mean(list(summary["auc"].values())))
    assert summary["mean_auc_ci"][0] <= summary["mean_auc"] <= summary["mean_auc_ci"][1]
    assert any("0.5" in note for note in summary["notes"])
    written = pd.read_csv(out / "predictions.csv")
    pd.testing.assert_frame_equal(written, scores)


def test_curve_files_need_no_recomputation(evaluated):
    out, predictions_csv = evaluated
    loaded = results.read_evaluation(out)
    labels, scores = pd.read_csv(TEST_LABELS), pd.read_csv(predictions_csv)
    for finding in ("Atelectasis", "Edema"):
        y, s = labels[finding], scores[finding]
        roc = loaded.roc[loaded.roc["finding"] == finding]
        fpr, tpr, thresholds = sk.roc_curve(y, s)
        np.testing.assert_allclose(roc[["fpr", "tpr", "threshold"]].to_numpy().T, [fpr, tpr, thresholds])
        pr = loaded.pr[loaded.pr["finding"] == finding]
        precision, recall, cut = sk.precision_recall_curve(y, s, drop_intermediate=True)
        np.testing.assert_allclose(pr["precision"], precision)
        np.testing.assert_allclose(pr["recall"], recall)
        np.testing.assert_allclose(pr["threshold"], np.r_[cut, np.nan])
    assert len(loaded.calibration) == 10 * len(FINDINGS)
    assert loaded.summary.n_images == 55


def test_the_command_line_entry_point(tmp_path):
    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    command = [sys.executable, "-m", "pipeline", "evaluate", "--predictions", str(predictions)]
    command += ["--labels", str(TEST_LABELS), "--out", str(tmp_path / "out"), "--bootstrap", "20"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "Atelectasis" in result.stdout and "mean" in result.stdout
    assert (tmp_path / "out" / "metrics.json").is_file()


def test_a_finding_without_positives_is_null_not_a_crash(tmp_path, capsys):
    labels = pd.read_csv(TEST_LABELS)
    labels["Hernia"] = 0
    labels.to_csv(tmp_path / "labels.csv", index=False)
    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    out = tmp_path / "out"
    code, stdout, _ = run_main(
        capsys, "evaluate", "--predictions", predictions, "--labels", tmp_path / "labels.csv", "--out", out
    )
    assert code == 0
    summary = strict_json(out / "metrics.json")
    for key in ("auc", "auc_ci", "average_precision"):
        assert summary[key]["Hernia"] is None
    assert summary["at_threshold"]["Hernia"]["sensitivity"] is None
    hernia = pd.read_csv(predictions)["Hernia"]  # every image is negative: specificity = share below 0.5
    assert summary["at_threshold"]["Hernia"]["specificity"] == pytest.approx((hernia < 0.5).mean())
    assert summary["at_threshold"]["Hernia"]["fp"] == int((hernia >= 0.5).sum())
    assert any(note.startswith("Hernia: no positive image") for note in summary["notes"])
    others = [summary["auc"][f] for f in FINDINGS if f != "Hernia"]
    assert summary["mean_auc"] == pytest.approx(np.mean(others))
    assert "Hernia" not in set(pd.read_csv(out / "roc.csv")["finding"])
    assert "Hernia" in stdout


def test_bootstrap_zero_gives_no_intervals(tmp_path, capsys):
    predictions = write_predictions(TEST_LABELS, tmp_path / "preds.csv")
    out = tmp_path / "out"
    argv = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out, "--bootstrap", "0"]
    assert run_main(capsys, *argv)[0] == 0
    summary = strict_json(out / "metrics.json")
    assert summary["mean_auc_ci"] is None and set(summary["auc_ci"].values()) == {None}


def test_labels_and_predictions_on_different_images(tmp_path, capsys):
    predictions = pd.read_csv(write_predictions(TEST_LABELS, tmp_path / "preds.csv"))
    missing = predictions["Image"].iloc[:3].tolist()
    extra = predictions.iloc[[3]].assign(Image="99999999_000.png")
    pd.concat([predictions.iloc[3:], extra]).to_csv(tmp_path / "bad.csv", index=False)
    argv = ["evaluate", "--predictions", tmp_path / "bad.csv", "--labels", TEST_LABELS, "--out", tmp_path / "out"]
    code, _, err = run_main(capsys, *argv)
    assert_one_line_error(code, err, "3 of 55 labelled images have no prediction", missing[0], "99999999_000.png")
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.drop(columns="Mass"), ["missing column", "Mass"]),
        (lambda t: t.assign(Edema=t["Edema"].astype(object).where(t.index != 4, "high")), ["'Edema'", "row 6", "high"]),
        (lambda t: t.assign(Nodule=t["Nodule"] * 100), ["'Nodule'", "from 0 to 1"]),
        (lambda t: t.assign(Hernia=t["Hernia"].where(t.index != 0)), ["'Hernia'", "row 2"]),
        (lambda t: pd.concat([t, t.iloc[[0]]]), ["more than one row"]),
    ],
    ids=["missing-column", "not-a-number", "outside-0-1", "empty", "duplicate"],
)
def test_bad_predictions_csv_is_one_line(tmp_path, capsys, change, words):
    predictions = pd.read_csv(write_predictions(TEST_LABELS, tmp_path / "preds.csv"))
    change(predictions).to_csv(tmp_path / "bad.csv", index=False)
    argv = ["evaluate", "--predictions", tmp_path / "bad.csv", "--labels", TEST_LABELS, "--out", tmp_path / "out"]
    assert_one_line_error(*run_main(capsys, *argv)[::2], "bad.csv", *words)


def test_thresholds_chosen_on_a_validation_evaluation(tmp_path, capsys):
    valid_predictions = write_predictions(VALID_LABELS, tmp_path / "valid.csv", seed=5)
    valid_out = tmp_path / "eval-valid"
    argv = ["evaluate", "--predictions", valid_predictions, "--labels", VALID_LABELS, "--out", valid_out]
    assert run_main(capsys, *argv, "--bootstrap", "0")[0] == 0
    test_predictions = write_predictions(TEST_LABELS, tmp_path / "test.csv")
    for source in (valid_out, valid_out / "predictions.csv"):  # the folder or its predictions.csv
        out = tmp_path / "eval-test"
        argv = ["evaluate", "--predictions", test_predictions, "--labels", TEST_LABELS, "--out", out]
        assert run_main(capsys, *argv, "--valid-predictions", source, "--bootstrap", "0")[0] == 0
        summary = strict_json(out / "metrics.json")
        assert summary["threshold_source"] == "validation_youden"
        labels, scores = pd.read_csv(VALID_LABELS), pd.read_csv(valid_predictions)
        for finding in FINDINGS:
            expected = metrics.choose_threshold(labels[finding], scores[finding])
            assert summary["thresholds"][finding] == expected
        tests, test_scores = pd.read_csv(TEST_LABELS), pd.read_csv(test_predictions)
        chosen = summary["thresholds"]["Effusion"]
        expected = metrics.metrics_at_threshold(tests["Effusion"], test_scores["Effusion"], chosen)
        assert summary["at_threshold"]["Effusion"] == expected


def test_thresholds_for_a_target_sensitivity(tmp_path, capsys):
    valid_predictions = write_predictions(VALID_LABELS, tmp_path / "valid.csv", seed=5)
    valid_out = tmp_path / "eval-valid"
    argv = ["evaluate", "--predictions", valid_predictions, "--labels", VALID_LABELS, "--out", valid_out]
    assert run_main(capsys, *argv, "--bootstrap", "0")[0] == 0
    out = tmp_path / "eval-test"
    argv = ["evaluate", "--predictions", write_predictions(TEST_LABELS, tmp_path / "test.csv"), "--labels",
            TEST_LABELS, "--out", out, "--valid-predictions", valid_out, "--bootstrap", "0"]
    assert run_main(capsys, *argv, "--target-sensitivity", "0.9")[0] == 0
    summary = strict_json(out / "metrics.json")
    assert summary["threshold_source"] == "validation_sensitivity_0.9"
    labels, scores = pd.read_csv(VALID_LABELS), pd.read_csv(valid_predictions)
    for finding in FINDINGS:
        expected = metrics.choose_threshold(labels[finding], scores[finding], target_sensitivity=0.9)
        assert summary["thresholds"][finding] == expected
        chosen = scores[finding] >= expected
        assert chosen[labels[finding] == 1].mean() >= 0.9  # reached on the validation set
    code, _, err = run_main(capsys, *argv, "--target-sensitivity", "1.5")
    assert_one_line_error(code, err, "--target-sensitivity")


def test_validation_predictions_need_their_labels(tmp_path, capsys):
    lone = write_predictions(VALID_LABELS, tmp_path / "valid.csv")
    predictions = write_predictions(TEST_LABELS, tmp_path / "test.csv")
    argv = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", tmp_path / "out"]
    code, _, err = run_main(capsys, *argv, "--valid-predictions", lone)
    assert_one_line_error(code, err, "valid.csv", "labels.csv")


def test_thresholds_from_a_json_file(evaluated, tmp_path, capsys):
    _, predictions = evaluated
    chosen = {finding: 0.2 + 0.01 * i for i, finding in enumerate(FINDINGS)}
    (tmp_path / "thresholds.json").write_text(json.dumps(chosen))
    out = tmp_path / "out"
    argv = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out, "--bootstrap", "0"]
    assert run_main(capsys, *argv, "--thresholds", tmp_path / "thresholds.json")[0] == 0
    summary = strict_json(out / "metrics.json")
    assert summary["thresholds"] == chosen and summary["threshold_source"] == "file"
    # an evaluation's metrics.json works as a thresholds file too
    assert run_main(capsys, *argv, "--thresholds", out / "metrics.json")[0] == 0
    assert strict_json(out / "metrics.json")["thresholds"] == chosen

    del chosen["Mass"]
    (tmp_path / "partial.json").write_text(json.dumps(chosen))
    code, _, err = run_main(capsys, *argv, "--thresholds", tmp_path / "partial.json")
    assert_one_line_error(code, err, "partial.json", "Mass")


def test_option_errors_are_one_line(evaluated, tmp_path, capsys):
    _, predictions = evaluated
    base = ["evaluate", "--labels", TEST_LABELS, "--out", tmp_path / "out"]
    code, _, err = run_main(capsys, *base, "--checkpoint", tmp_path / "model.keras")
    assert_one_line_error(code, err, "--images")
    code, _, err = run_main(capsys, *base, "--predictions", predictions, "--valid-labels", VALID_LABELS)
    assert_one_line_error(code, err, "--valid-labels")
    code, _, err = run_main(capsys, *base, "--predictions", predictions, "--bootstrap", "-1")
    assert_one_line_error(code, err, "--bootstrap")
    code, _, err = run_main(capsys, *base, "--predictions", tmp_path / "nowhere.csv")
    assert_one_line_error(code, err, "nowhere.csv", "not found")


# --- from a checkpoint -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras's own, on every forward pass
def test_evaluate_a_checkpoint_on_20_images(small_checkpoint, small_model, tmp_path, capsys):
    """The --checkpoint path end to end: a tiny random DenseNet121, 20 test images, thresholds from 6 valid images.

    One more image of the test labels is a truncated PNG: it is left out with a warning and a note, not a crash.
    """
    from pipeline.inference import predict

    images = tmp_path / "images"
    images.mkdir()
    labels = pd.read_csv(TEST_LABELS).iloc[:21]
    valid = pd.read_csv(VALID_LABELS).iloc[:6]
    for name in [*labels["Image"].iloc[:20], *valid["Image"]]:
        (images / name).symlink_to(IMAGES / name)
    broken = labels["Image"].iloc[20]
    (images / broken).write_bytes((IMAGES / broken).read_bytes()[:200])
    labels.to_csv(tmp_path / "labels.csv", index=False)
    valid.to_csv(tmp_path / "valid.csv", index=False)

    out = tmp_path / "out"
    argv = ["evaluate", "--checkpoint", small_checkpoint, "--labels", tmp_path / "labels.csv", "--images", images]
    code, stdout, err = run_main(capsys, *argv, "--out", out, "--valid-labels", tmp_path / "valid.csv")
    assert code == 0, err
    assert err.startswith("warning: labels.csv: 1 image could not be read and is left out")
    summary = strict_json(out / "metrics.json")
    assert summary["n_images"] == 20 and summary["checkpoint"] == str(small_checkpoint)
    assert summary["checkpoint_sha256"] == hashlib.sha256(small_checkpoint.read_bytes()).hexdigest()  # the weights
    assert list(summary["skipped_images"]) == [broken]
    assert summary["threshold_source"] == "validation_youden"
    assert any("valid.csv (6 images)" in note for note in summary["notes"])
    written = pd.read_csv(out / "predictions.csv")
    assert written["Image"].tolist() == labels["Image"].iloc[:20].tolist()
    expected = predict.predict_paths(small_model, [images / name for name in written["Image"].iloc[:2]])
    np.testing.assert_allclose(written[list(FINDINGS)].to_numpy()[:2], expected.probabilities, atol=1e-5)
    assert "Atelectasis" in stdout


def test_evaluate_on_a_prepared_folder_matches_the_image_folder(small_checkpoint, tmp_path, capsys):
    """A folder prepared at the model's input size gives the same images, so the same predictions (to 1e-5).

    Thresholds come from a prepared validation folder; `--images` is not needed for either.
    """
    from pipeline.data import prepare

    prepare.prepare(TEST_LABELS, IMAGES, tmp_path / "test", 64, workers=1, log=lambda line: None)
    prepare.prepare(VALID_LABELS, IMAGES, tmp_path / "valid", 64, workers=1, log=lambda line: None)
    common = ["--checkpoint", small_checkpoint, "--bootstrap", "50"]
    code, _, err = run_main(capsys, "evaluate", *common, "--labels", TEST_LABELS, "--images", IMAGES,
                            "--valid-labels", VALID_LABELS, "--out", tmp_path / "from-images")
    assert code == 0, err
    code, _, err = run_main(capsys, "evaluate", *common, "--labels", tmp_path / "test",
                            "--valid-labels", tmp_path / "valid", "--out", tmp_path / "from-shards")
    assert code == 0, err
    images, shards = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("from-images", "from-shards"))
    assert images["Image"].tolist() == shards["Image"].tolist()
    np.testing.assert_allclose(shards[list(FINDINGS)], images[list(FINDINGS)], atol=1e-5)
    a, b = (strict_json(tmp_path / name / "metrics.json") for name in ("from-images", "from-shards"))
    assert a["labels_sha256"] == b["labels_sha256"]  # the prepared labels.csv holds the same rows
    np.testing.assert_allclose(list(b["thresholds"].values()), list(a["thresholds"].values()), atol=1e-4)
    code, _, err = run_main(capsys, "evaluate", *common, "--labels", tmp_path / "test", "--out", tmp_path / "x",
                            "--valid-labels", VALID_LABELS)
    assert_one_line_error(code, err, "--valid-labels", "--images")
