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


def test_evaluate_a_checkpoint_abstains_on_out_of_distribution_images_first(small_checkpoint, tmp_path, capsys):
    import shutil

    from conftest import IMAGES

    from pipeline.evaluation import conformal

    test, valid = pd.read_csv(TEST_LABELS).head(12), pd.read_csv(VALID_LABELS).head(20)
    (tmp_path / "images").mkdir()
    for name in [*test["Image"], *valid["Image"]]:
        shutil.copy(IMAGES / name, tmp_path / "images" / name)
    flat = test["Image"].iloc[4]
    cv2.imwrite(str(tmp_path / "images" / flat), np.full((256, 256), 120, np.uint8))
    test.to_csv(tmp_path / "test.csv", index=False)
    valid.to_csv(tmp_path / "valid.csv", index=False)
    code, _, err = run_main(capsys, "evaluate", "--checkpoint", small_checkpoint, "--labels", tmp_path / "test.csv",
                            "--images", tmp_path / "images", "--valid-labels", tmp_path / "valid.csv",
                            "--miss-rate", "0.3", "--out", tmp_path / "eval", "--bootstrap", "0")
    assert code == 0, err
    guarantees = results.read_conformal(tmp_path / "eval")
    assert guarantees.abstention == conformal.OOD_FIRST and guarantees.calibration_images == 20
    curve = results.read_risk_coverage(tmp_path / "eval").set_index("n_kept")
    scores = pd.read_csv(tmp_path / "eval" / "predictions.csv")
    kept = (scores["Image"] != flat).to_numpy()
    y, p = test[list(FINDINGS)].to_numpy()[kept], scores[list(FINDINGS)].to_numpy()[kept]
    assert curve.loc[11, "set_miss"] == pytest.approx(conformal.missed_shares(y, p, guarantees.image.threshold).mean())
