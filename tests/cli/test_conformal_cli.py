"""`evaluate --miss-rate` and `predict`'s conformal answers through the command line (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import NIH, REPO, TEST_DATA, TEST_LABELS, VALID_LABELS, assert_one_line_error, run_main, write_predictions

from pipeline.core.files import sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import results

DEMO = REPO / "artifacts" / "runs" / "densenet121-128-weighted"


def test_evaluate_miss_rate_writes_the_order_statistic_and_the_realised_rates(tmp_path, capsys):
    valid = tmp_path / "eval-valid"
    code, _, _ = run_main(capsys, "evaluate", "--predictions", write_predictions(VALID_LABELS, tmp_path / "v.csv"),
                          "--labels", VALID_LABELS, "--out", valid, "--bootstrap", "0")
    assert code == 0
    out = tmp_path / "eval-test"
    predictions = write_predictions(TEST_LABELS, tmp_path / "t.csv")
    code, printed, err = run_main(capsys, "evaluate", "--predictions", predictions, "--labels", TEST_LABELS,
                                  "--valid-predictions", valid, "--miss-rate", "0.2", "--false-alarm-rate", "0.1",
                                  "--out", out, "--bootstrap", "50", "--plots")
    assert code == 0, err
    guarantees = results.read_conformal(out)
    assert (guarantees.miss_rate, guarantees.false_alarm_rate) == (0.2, 0.1)
    assert guarantees.calibration == str(valid) and guarantees.calibration_images == 55
    assert guarantees.calibration_sha256 == sha256_of(VALID_LABELS)  # which validation labels, not just their name
    v_labels, v_scores = pd.read_csv(VALID_LABELS), pd.read_csv(tmp_path / "v.csv")
    t_labels, t_scores = pd.read_csv(TEST_LABELS), pd.read_csv(tmp_path / "t.csv")
    for finding in FINDINGS:
        g = guarantees.findings[finding]
        positives = np.sort(v_scores[finding][v_labels[finding] == 1].to_numpy())
        k = int(np.floor(0.2 * (len(positives) + 1) + 1e-9))
        if k == 0:
            assert g.miss_threshold is None and "too few" in g.notes[0]
            assert f"{finding:<20} {len(positives):>4} too few positives" in printed
            continue
        assert g.miss_threshold == positives[k - 1]
        test_positives = t_scores[finding][t_labels[finding] == 1]
        assert g.test_misses.count == int((test_positives < g.miss_threshold).sum())
        assert g.test_misses.n == len(test_positives) and g.test_misses.ci[0] <= g.test_misses.rate
    assert guarantees.test == str(TEST_LABELS)  # the path as given, like calibration: a bare test.csv names no split
    assert "calibrated on" in printed and f"checked on {TEST_LABELS};" in printed and "image level:" in printed
    curve = results.read_risk_coverage(out)
    assert curve.iloc[0].n_kept == 55 and curve.iloc[-1].n_kept == 0
    assert (out / "conformal.html").is_file() and "conformal.json" in printed
    # Evaluated again without --miss-rate, the folder no longer vouches for the old guarantees.
    code, _, _ = run_main(capsys, "evaluate", "--predictions", tmp_path / "t.csv", "--labels", TEST_LABELS,
                          "--out", out, "--bootstrap", "0")
    assert code == 0 and results.read_conformal(out) is None and not (out / "risk_coverage.csv").exists()


def test_miss_rate_errors_are_one_line(tmp_path, capsys):
    predictions = write_predictions(TEST_LABELS, tmp_path / "t.csv")
    base = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", tmp_path / "e"]
    assert_one_line_error(*run_main(capsys, *base, "--miss-rate", "0.1")[::2], "--miss-rate", "--valid-predictions")
    assert_one_line_error(*run_main(capsys, *base, "--false-alarm-rate", "0.1")[::2], "--false-alarm-rate needs")
    assert_one_line_error(*run_main(capsys, *base, "--miss-rate", "1.5")[::2], "--miss-rate must be a share")


def predict_json(*args) -> list[dict]:
    result = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--json", *map(str, args)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def test_predict_json_carries_three_answers_and_an_ood_image_none(tmp_path):
    photo = np.zeros((400, 400, 3), np.uint8)
    photo[:, :200] = (0, 180, 0)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    xray, flagged = predict_json("--checkpoint", DEMO / "best.keras", TEST_DATA / "00000001_000.png",
                                 tmp_path / "photo.png")
    shipped = results.read_conformal(DEMO / "eval-test")
    answer = xray["conformal"]
    assert answer["calibration"] == shipped.calibration == "artifacts/runs/densenet121-128-weighted/eval-valid"
    assert answer["evaluation"].endswith("eval-test") and answer["miss_rate"] == shipped.miss_rate
    assert answer["matched_by"] == "sha256"  # the shipped evaluations record the shipped weights' hash
    assert set(answer["answers"]) == set(FINDINGS) and set(answer["guarantees"]) == set(FINDINGS)
    assert set(answer["answers"].values()) <= {"ruled out", "uncertain", "flagged"}
    for finding, given in answer["answers"].items():
        g, p = shipped.findings[finding], xray["probabilities"][finding]
        if given == "ruled out":
            assert p < g.miss_threshold and "ruled out with probability at most" in answer["guarantees"][finding]
        if given == "flagged":
            assert p > g.false_alarm_threshold and "negatives of" in answer["guarantees"][finding]
        if g.miss_threshold is None:  # too few validation positives: never ruled out, and uncertain says why
            assert given != "ruled out"
            assert given == "flagged" or "too few" in answer["guarantees"][finding]
    assert answer["image_set"] == [f for f in FINDINGS if xray["probabilities"][f] >= shipped.image.threshold]
    assert "on average over images with a finding, at most 20% of an image's true findings fall outside this set" \
        in answer["image_set_guarantee"]  # the risk is controlled over images with a finding, not all images
    assert flagged["in_distribution"] is False
    assert "image_set" not in flagged["conformal"]
    assert flagged["conformal"]["answers"] is None and "guarantees" not in flagged["conformal"]
    reason = flagged["conformal"]["reason"]
    assert "out of distribution" in reason and "calibration images" in reason


def test_predict_text_and_an_explicit_evaluation_without_guarantees(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--checkpoint", DEMO / "best.keras",
                             TEST_DATA / "00000001_000.png"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0 and "conformal answers (miss rate <= 0.2" in result.stdout
    assert "ruled out:" in result.stdout and "flagged:" in result.stdout and "uncertain:" in result.stdout
    missing = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--checkpoint", DEMO / "best.keras",
                              "--conformal", NIH, TEST_DATA / "00000001_000.png"], capture_output=True, text=True,
                             cwd=REPO, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no conformal.json" in missing.stderr


@pytest.fixture(scope="module")
def evaluated_run(small_checkpoint, tmp_path_factory):
    """A run folder whose best.keras (the small model) `evaluate` scored into eval-test with conformal thresholds
    (miss rate 0.3), on 12 test images, one of them replaced by a flat grey picture the guard flags."""
    import shutil

    from conftest import IMAGES, _main

    root = tmp_path_factory.mktemp("evaluated-run")
    test, valid = pd.read_csv(TEST_LABELS).head(12), pd.read_csv(VALID_LABELS).head(20)
    (root / "images").mkdir()
    for name in [*test["Image"], *valid["Image"]]:
        shutil.copy(IMAGES / name, root / "images" / name)
    flat = test["Image"].iloc[4]
    cv2.imwrite(str(root / "images" / flat), np.full((256, 256), 120, np.uint8))
    test.to_csv(root / "test.csv", index=False)
    valid.to_csv(root / "valid.csv", index=False)
    run = root / "run"
    run.mkdir()
    shutil.copy(small_checkpoint, run / "best.keras")
    assert _main([str(a) for a in ["evaluate", "--checkpoint", run / "best.keras", "--labels", root / "test.csv",
                                   "--images", root / "images", "--valid-labels", root / "valid.csv",
                                   "--miss-rate", "0.3", "--out", run / "eval-test", "--bootstrap", "0"]]) == 0
    return run, test, flat


def test_evaluate_a_checkpoint_abstains_on_out_of_distribution_images_first(evaluated_run):
    from pipeline.evaluation import conformal

    run, test, flat = evaluated_run
    guarantees = results.read_conformal(run / "eval-test")
    assert guarantees.abstention == conformal.OOD_FIRST and guarantees.calibration_images == 20
    curve = results.read_risk_coverage(run / "eval-test").set_index("n_kept")
    scores = pd.read_csv(run / "eval-test" / "predictions.csv")
    kept = (scores["Image"] != flat).to_numpy()
    y, p = test[list(FINDINGS)].to_numpy()[kept], scores[list(FINDINGS)].to_numpy()[kept]
    assert curve.loc[11, "set_miss"] == pytest.approx(conformal.missed_shares(y, p, guarantees.image.threshold).mean())


def test_guarantees_and_thresholds_go_only_to_the_weights_evaluated(evaluated_run, small_model, tmp_path, capsys):
    """A retrained or copied-in best.keras must not inherit the thresholds measured on the old weights: `evaluate`
    records the checkpoint's SHA-256 and `predict` compares it; an older evaluation matches by name, saying so."""
    import shutil

    from pipeline.cli.prediction import _guarantees, run_thresholds
    from pipeline.core.errors import InputError
    from pipeline.evaluation import conformal
    from pipeline.networks import densenet

    run = shutil.copytree(evaluated_run[0], tmp_path / "run")
    a, evaluation, image = run / "best.keras", run / "eval-test", TEST_DATA / "00000001_000.png"
    metrics_file = evaluation / results.METRICS_JSON
    assert results.read_metrics(evaluation).checkpoint_sha256 == sha256_of(a)
    found = conformal.find_for_checkpoint(a)
    assert found is not None and found.folder == evaluation and found.note is None
    thresholds, note = run_thresholds(a)
    assert thresholds == results.read_metrics(evaluation).thresholds
    assert note.startswith(f"thresholds from {evaluation} (") and "file name" not in note
    shutil.copy(a, run / "renamed.keras")  # the same weights under another name: still theirs
    assert conformal.find_for_checkpoint(run / "renamed.keras") is not None

    # An evaluation written before the hash was recorded: matched by file stem, in one line, never silently.
    original = metrics_file.read_text()
    old = json.loads(original)
    del old["checkpoint_sha256"]
    metrics_file.write_text(json.dumps(old))
    notice = "matched by file name only: re-run evaluate to bind them to this checkpoint"
    found = conformal.find_for_checkpoint(a)
    assert found is not None and found.note.endswith(notice)
    assert notice in run_thresholds(a)[1] and run_thresholds(a)[0]
    assert conformal.find_for_checkpoint(run / "renamed.keras") is None and not run_thresholds(run / "renamed.keras")[0]
    code, out, err = run_main(capsys, "predict", "--checkpoint", a, image)
    assert code == 0 and "conformal answers (miss rate <= 0.3" in out and notice in out
    assert [line for line in err.splitlines() if notice in line] == [f"warning: conformal {found.note}"]

    # An evaluation from a predictions file names no checkpoint: it supplies nothing to any.
    metrics_file.write_text(json.dumps({**old, "checkpoint": None, "predictions_file": "predictions.csv"}))
    assert conformal.find_for_checkpoint(a) is None
    thresholds, note = run_thresholds(a)
    assert thresholds == {} and "predictions file" in note
    with pytest.raises(InputError, match="predictions file"):
        _guarantees(a, evaluation)

    # Other weights written over best.keras after evaluating: the recorded SHA-256 no longer matches.
    metrics_file.write_text(original)
    bias = small_model.get_layer("predictions").bias  # the weights evaluated, retrained a little
    original = bias.numpy().copy()
    bias.assign(original + 0.5)
    try:
        densenet.save(small_model, a)
    finally:
        bias.assign(original)
    assert conformal.find_for_checkpoint(a) is None
    thresholds, note = run_thresholds(a)
    assert thresholds == {} and "evaluated other weights than those now in best.keras" in note
    with pytest.raises(InputError, match="other weights"):
        _guarantees(a, evaluation)
    code, out, err = run_main(capsys, "predict", "--checkpoint", a, image)
    assert code == 0 and "conformal answers" not in out and "POSITIVE" not in out
    assert "no operating thresholds, nothing is marked positive" in out
    # nor are operating thresholds or conformal thresholds chosen for it on the old weights' validation scores
    code, _, err = run_main(capsys, "evaluate", "--checkpoint", a, "--labels", TEST_LABELS, "--images", NIH / "images",
                            "--valid-predictions", evaluation, "--out", tmp_path / "eval")
    assert_one_line_error(code, err, "--valid-predictions", "the scores of other weights than best.keras")
