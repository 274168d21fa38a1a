"""Chest X-ray classification toolkit: data, leakage, training, evaluation and Grad-CAM for NIH ChestX-ray14."""

import os

# ONNX Runtime (1.32 on Linux) records usage events, with a device id, under ~/.cache/Microsoft unless this is set
# before it is first imported; a research tool handling medical images records nothing of the kind.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from pipeline.core.errors import InputError  # noqa: E402 - after the environment is set
from pipeline.core.findings import FINDINGS

__all__ = ["FINDINGS", "InputError"]
__version__ = "0.1.0"
