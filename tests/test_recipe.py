"""docs/examples/recipe.py runs start to finish from another folder and leaves what it says (a real process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

RECIPE = REPO / "docs" / "examples" / "recipe.py"


def test_the_recipe_runs_and_writes_a_run_an_evaluation_and_an_overlay(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, str(RECIPE), str(out)], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [line.split(".")[0] for line in result.stdout.splitlines() if line[:2] in {"1.", "2.", "3.", "4.", "5."}]
    assert steps == ["1", "2", "3", "4", "5"], result.stdout
    assert "train/valid share 0 patients; train/test share 0 patients; valid/test share 0 patients" in result.stdout
    metrics = json.loads((out / "run" / "eval-test" / "metrics.json").read_text())
    assert metrics["n_images"] == 55 and metrics["threshold_source"].startswith("validation")
    assert (out / "run" / "best.keras").is_file() and (out / "gradcam.png").stat().st_size > 0
