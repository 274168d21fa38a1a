"""`pipeline.core.quiet`: importing TensorFlow after `silence_tensorflow` writes nothing to stderr (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

SCRIPT = "from pipeline.core import quiet; quiet.silence_tensorflow(); import tensorflow; print('imported')"


def run(verbose: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "CHESTXRAY_VERBOSE": verbose}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)


def test_tensorflow_imports_silently_and_verbose_brings_its_logging_back():
    quiet, loud = run("0"), run("1")
    assert quiet.returncode == 0 and quiet.stdout == "imported\n"
    assert quiet.stderr == ""
    assert loud.returncode == 0 and loud.stderr != ""  # what the hook keeps off stderr
