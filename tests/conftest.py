"""Shared paths and fixtures. Tests run on the committed real data under nih/ and tests/fixtures/."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.findings import FINDINGS

REPO = Path(__file__).resolve().parent.parent
NIH = REPO / "nih"
IMAGES = NIH / "images"
METADATA = NIH / "metadata" / "Data_Entry_2017_v2020.csv.gz"
TEST_DATA = REPO / "tests" / "fixtures"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, for worker processes (held together, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="session")
def full_metadata():
    """The canonical table of all 112,120 NIH images (read once per test session)."""
    from pipeline.data.label_files import load_labels

    return load_labels(METADATA)


SMALL_SIZE = 64  # model input side for tests: DenseNet121 builds and runs fast at 64 px


@pytest.fixture(scope="session")
def small_model():
    """A random-init DenseNet121 on 64 px images, built once per session (a build takes seconds)."""
    import keras

    from pipeline.networks import densenet

    keras.utils.set_random_seed(0)
    return densenet.build(SMALL_SIZE, weights="none")


@pytest.fixture(scope="session")
def small_checkpoint(small_model, tmp_path_factory):
    """`small_model` saved as a .keras checkpoint."""
    from pipeline.networks import densenet

    path = tmp_path_factory.mktemp("checkpoint") / "small.keras"
    densenet.save(small_model, path)
    return path


# --- evaluations on the NIH test split (test_evaluate.py, test_compare.py, test_results.py, test_plots.py) ---------

TEST_LABELS = NIH / "test.csv"  # 55 images, every finding with at least one positive (Edema: exactly one)
VALID_LABELS = NIH / "valid-small.csv"
FILES = {"predictions.csv", "labels.csv", "metrics.json", "roc.csv", "pr.csv", "calibration.csv",
         "subgroups.json", "subgroups.csv", "subgroup_metadata.csv"}  # the subgroup audit: on by default


def write_predictions(labels_csv, path, seed=0, signal=0.3):
    """Probabilities that lean towards the labels, rounded to 2 decimals so that ties occur."""
    labels = pd.read_csv(labels_csv)
    rng = np.random.default_rng(seed)
    y = labels[list(FINDINGS)].to_numpy()
    table = pd.DataFrame(np.round(np.clip(signal * y + rng.random(y.shape) * (1 - signal), 0, 1), 2), columns=FINDINGS)
    table.insert(0, "Image", labels["Image"])
    table.to_csv(path, index=False)
    return path


def strict_json(path):
    """metrics.json must be standard JSON: NaN or Infinity would fail here."""
    return json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in {path}"))


def _main(argv):
    from pipeline.cli import main

    return main(argv)


def run_main(capsys, *argv):
    code = _main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    for word in words:
        assert word in err, err


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """An evaluation of the test split with default thresholds; returns (folder, predictions CSV)."""
    root = tmp_path_factory.mktemp("eval")
    predictions = write_predictions(TEST_LABELS, root / "preds.csv")
    out = root / "eval-a"
    argv = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out, "--bootstrap", "300"]
    assert _main([str(a) for a in argv]) == 0
    return out, predictions


@pytest.fixture(scope="module")
def second(tmp_path_factory):
    """A weaker model's evaluation of the same images."""
    root = tmp_path_factory.mktemp("eval")
    predictions = write_predictions(TEST_LABELS, root / "preds.csv", seed=1, signal=0.1)
    out = root / "eval-b"
    argv = ["evaluate", "--predictions", predictions, "--labels", TEST_LABELS, "--out", out, "--bootstrap", "50"]
    assert _main([str(a) for a in argv]) == 0
    return out
