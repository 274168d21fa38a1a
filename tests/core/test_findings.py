"""`pipeline.core.findings`: the 14 names are exactly the NIH metadata's findings, in alphabetical order."""

from __future__ import annotations

import pandas as pd

from pipeline.core import paths
from pipeline.core.findings import FINDINGS, NO_FINDING


def test_the_14_findings_are_the_nih_labels():
    labels = pd.read_csv(paths.metadata_file(), usecols=["Finding Labels"])["Finding Labels"]
    named = {name for cell in labels for name in cell.split("|")}
    assert named == {*FINDINGS, NO_FINDING}
    assert list(FINDINGS) == sorted(FINDINGS) and len(FINDINGS) == 14
