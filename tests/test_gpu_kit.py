"""The GPU proof kit (`benchmarks/gpu/run.sh`) end to end on this CPU under JAX, at tiny size, in a Python where
`import tensorflow` fails as it does on the GPU machine: it installs the project, prepares, times the input and
compiles, counts and times the training step in float32 and bfloat16."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

NO_TENSORFLOW = """import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow' (blocked: the GPU machine has none)")


sys.meta_path.insert(0, _NoTensorFlow())
"""


def _kit(tmp_path, *args: str) -> subprocess.CompletedProcess:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(blocker),
        "KIT_WHEELS": "none",
        "KIT_SITE": str(tmp_path / "site"),
    }
    return subprocess.run(
        ["bash", "benchmarks/gpu/run.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="needs JAX (the kit trains under KERAS_BACKEND=jax)"
)


@needs_jax
def test_the_kit_runs_end_to_end_without_tensorflow(tmp_path):
    result = _kit(
        tmp_path,
        "--entries",
        "120",
        "--image-size",
        "32",
        "--batch-sizes",
        "4",
        "--steps",
        "2",
        "--input-batches",
        "3",
        "--workers",
        "2",
        "--model",
        "tiny",
        "--no-train-command",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Keras 3.15.1 (jax); TensorFlow absent" in out
    assert re.search(r"^prepare: 120 images at 32 px with 2 processes in [\d.]+ s", out, re.M)
    assert re.search(r"^input pipeline alone, batch 4, augmented: [\d,]+ images/s", out, re.M)
    for precision in ("float32", "bfloat16"):
        line = re.search(
            rf"^train {precision} +batch 4: ([\d,]+) images/s .* ([\d.e+-]+) GFLOP/image by XLA", out, re.M
        )
        assert line, out
        assert float(line.group(1).replace(",", "")) > 0 and float(line.group(2)) > 0  # counted, not guessed
    assert "peak memory n/a" in out  # a CPU reports none; the GPU machine prints GiB
    assert re.search(r"^proof kit finished in \d+ s wall time", out, re.M)


@needs_jax
def test_the_kit_runs_the_train_command_under_jax(tmp_path):
    result = _kit(
        tmp_path,
        "--entries",
        "200",
        "--image-size",
        "32",
        "--batch-sizes",
        "8",
        "--steps",
        "1",
        "--input-batches",
        "2",
        "--workers",
        "2",
        "--model",
        "tiny",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^python -m pipeline train \(KERAS_BACKEND=jax, one epoch\): ok in", result.stdout, re.M)
