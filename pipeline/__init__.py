"""Chest X-ray classification toolkit: data, leakage, training, evaluation and Grad-CAM for NIH ChestX-ray14."""

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS

__all__ = ["FINDINGS", "InputError"]
__version__ = "0.1.0"
