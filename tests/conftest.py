"""Shared paths and fixtures. Tests run on the committed real data under nih/ and tests/data/."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NIH = REPO / "nih"
IMAGES = NIH / "images"
METADATA = NIH / "metadata" / "Data_Entry_2017_v2020.csv.gz"
TEST_DATA = REPO / "tests" / "data"


@pytest.fixture(scope="session")
def full_metadata():
    """The canonical table of all 112,120 NIH images (read once per test session)."""
    from pipeline.data import load_labels

    return load_labels(METADATA)


SMALL_SIZE = 64  # model input side for tests: DenseNet121 builds and runs fast at 64 px


@pytest.fixture(scope="session")
def small_model():
    """A random-init DenseNet121 on 64 px images, built once per session (a build takes seconds)."""
    import keras

    from pipeline import model

    keras.utils.set_random_seed(0)
    return model.build(SMALL_SIZE, weights="none")


@pytest.fixture(scope="session")
def small_checkpoint(small_model, tmp_path_factory):
    """`small_model` saved as a .keras checkpoint."""
    from pipeline import model

    path = tmp_path_factory.mktemp("checkpoint") / "small.keras"
    model.save(small_model, path)
    return path
