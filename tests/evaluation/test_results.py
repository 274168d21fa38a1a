"""`pipeline.evaluation.results`: the typed metrics.json, its one reader and writer, and the threshold sources."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO

from pipeline import plots
from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import results
from pipeline.evaluation.results import ThresholdSource

SHIPPED = sorted((REPO / "artifacts" / "runs").glob("*/eval-*/metrics.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.parent.parent.name + "/" + p.parent.name for p in SHIPPED])
def test_shipped_metrics_round_trip_byte_for_byte(path):
    summary = results.read_metrics(path.parent)
    assert json.dumps(summary.to_json(), indent=2, allow_nan=False) + "\n" == path.read_text()
    assert summary.n_images == 55 and summary.findings == list(FINDINGS)
    assert summary.threshold_source in (ThresholdSource.VALIDATION_YOUDEN, ThresholdSource.DEFAULT)


def test_written_evaluation_reads_back_typed(evaluated):
    folder, predictions = evaluated
    saved = results.read_evaluation(folder)
    summary = saved.summary
    assert summary.threshold_source is ThresholdSource.DEFAULT and summary.threshold_key == "default_0.5"
    assert summary.predictions_file == str(predictions) and summary.checkpoint is None
    assert summary.model_source == str(predictions)
    point = summary.at_threshold["Atelectasis"]
    assert point.tp + point.fp + point.tn + point.fn == summary.n_images == 55
    assert sum(summary.calibration["Mass"].count) == 55
    assert set(saved.roc["finding"]) == set(FINDINGS) and len(saved.calibration) == 10 * len(FINDINGS)
    labels, scores = results.read_scored(folder)
    assert labels["Image"].tolist() == scores["Image"].tolist() and len(labels) == 55


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["unreadable"]),
        ("[1, 2]", ["expected a JSON object"]),
        ('{"n_images": 55}', ["no 'threshold_source' entry"]),
    ],
    ids=["not-json", "not-an-object", "missing-keys"],
)
def test_corrupt_metrics_json_is_one_line(evaluated, tmp_path, content, words):
    folder = tmp_path / "eval"
    shutil.copytree(evaluated[0], folder)
    (folder / "metrics.json").write_text(content)
    with pytest.raises(InputError) as error:
        results.read_metrics(folder)
    message = str(error.value)
    assert "\n" not in message and "metrics.json" in message and "run the evaluation again" in message
    assert all(word in message for word in words), message


def test_a_metrics_json_of_the_wrong_shape_is_refused(evaluated, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(evaluated[0], folder)
    content = json.loads((folder / "metrics.json").read_text())
    del content["auc"]["Mass"]
    content["threshold_source"] = "chosen_by_hand"
    for key, value, words in (("auc", content["auc"], "'auc' has no entry for Mass"),
                              ("threshold_source", "chosen_by_hand", "chosen_by_hand")):
        broken = json.loads((evaluated[0] / "metrics.json").read_text()) | {key: value}
        (folder / "metrics.json").write_text(json.dumps(broken))
        with pytest.raises(InputError, match=words):
            results.read_metrics(folder)
    (folder / "metrics.json").unlink()
    with pytest.raises(InputError, match="not an evaluation folder"):
        results.read_metrics(folder)


def test_missing_curve_file_is_named(evaluated, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(evaluated[0], folder)
    (folder / "pr.csv").unlink()
    with pytest.raises(InputError, match="pr.csv is missing"):
        results.read_evaluation(folder)


@pytest.mark.parametrize(
    ("key", "source", "target"),
    [
        ("validation_youden", ThresholdSource.VALIDATION_YOUDEN, None),
        ("validation_sensitivity_0.9", ThresholdSource.VALIDATION_SENSITIVITY, 0.9),
        ("validation_sensitivity_1", ThresholdSource.VALIDATION_SENSITIVITY, 1.0),
        ("file", ThresholdSource.FILE, None),
        ("default_0.5", ThresholdSource.DEFAULT, None),
        ("given", ThresholdSource.GIVEN, None),
    ],
)
def test_threshold_sources_parse_back_to_their_key_and_read_as_words(key, source, target):
    assert ThresholdSource.parse(key) == (source, target)
    assert source.key(target) == key
    words = source.describe(target)
    assert "_" not in words and len(words) > 10  # words, not the stored key
    if target is not None:
        assert f"{target:g}" in words


def test_unknown_threshold_source():
    with pytest.raises(ValueError):
        ThresholdSource.parse("chosen_by_hand")


def disk_fills_after(monkeypatch, writes: int) -> None:
    """A stand-in for a disk that fills up: the ``writes + 1``-th file flushed to disk fails with ENOSPC."""
    import errno
    import os

    from pipeline.core import files

    real, count = os.fsync, {"n": 0}

    def fsync(fd):
        count["n"] += 1
        if count["n"] > writes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)


@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_leaves_the_evaluation_folder_whole_or_absent(evaluated, tmp_path, monkeypatch, capsys,
                                                                  existing):
    from conftest import TEST_LABELS, assert_one_line_error, run_main

    _, predictions = evaluated
    out = tmp_path / "eval"
    if existing:
        shutil.copytree(evaluated[0], out)
        (out / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in out.iterdir()} if existing else None
    disk_fills_after(monkeypatch, 3)
    code, _, err = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out,
                            "--bootstrap", "20", "--plots")
    assert_one_line_error(code, err, str(out), "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == (["eval"] if existing else [])  # no temporary folder left
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier evaluation, untouched
    monkeypatch.undo()
    code, _, _ = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out,
                          "--bootstrap", "20", "--plots")
    assert code == 0 and results.read_evaluation(out).summary.n_images == 55
    assert (out / plots.EVALUATION_PAGE).is_file() and (out / "notes.txt").is_file() == existing
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]
