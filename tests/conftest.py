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
