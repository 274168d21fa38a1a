"""Chest X-ray classification toolkit: data, leakage, training, evaluation and Grad-CAM for NIH ChestX-ray14."""

from pipeline.errors import InputError
from pipeline.findings import FINDINGS

__all__ = ["FINDINGS", "InputError"]
__version__ = "0.1.0"
