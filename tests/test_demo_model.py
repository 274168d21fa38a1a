"""The demo model shipped in artifacts/: it loads, and reproduces its committed predictions and metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO

from pipeline.core.findings import FINDINGS
from pipeline.data import imaging
from pipeline.data.label_files import load_labels
from pipeline.inference import predict
from pipeline.networks import densenet

RUN = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
PLAIN = REPO / "artifacts" / "runs" / "densenet121-128-plain"


@pytest.fixture(scope="module")
def demo():
    return densenet.load(RUN / "best.keras")


def test_checkpoint_is_small_and_self_describing(demo):
    assert (RUN / "best.keras").stat().st_size < 40 * 2**20
    assert densenet.finding_names(demo) == list(FINDINGS)
    config = json.loads((RUN / "config.json").read_text())
    assert config["image_size"] == densenet.input_size(demo) == 128
    assert config["weights"] == "none" and config["loss"] == "weighted"


def test_reproduces_committed_predictions(demo):
    committed = pd.read_csv(RUN / "eval-test" / "predictions.csv")
    for _, row in committed.head(2).iterrows():
        image = imaging.load_image(IMAGES / row["Image"])
        probabilities = predict.predict_images(demo, [image])[0]
        np.testing.assert_allclose(probabilities, row[list(FINDINGS)].to_numpy(dtype=float), atol=1e-5)


def test_committed_evaluations_cover_the_embedded_test_set_with_intervals():
    test_images = set(load_labels(NIH / "test.csv")["Image"])
    for run in (RUN, PLAIN):
        metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
        assert metrics["n_images"] == len(test_images) == 55
        assert set(pd.read_csv(run / "eval-test" / "predictions.csv")["Image"]) == test_images
        low, high = metrics["mean_auc_ci"]
        assert low <= metrics["mean_auc"] <= high
        assert metrics["threshold_source"].startswith("validation")
