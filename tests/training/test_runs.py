"""Finding runs, checkpoints and evaluations in an artifacts folder, and reading what runs record.

Reading evaluation folders is `pipeline.evaluation.results` (tests/evaluation); artifacts: tests/core/test_paths.py.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from pipeline.core import paths
from pipeline.core.errors import InputError
from pipeline.training import runs


def touch(path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def artifacts(tmp_path):
    """Two runs as `train` and `evaluate` leave them, a stray evaluation and an empty run folder."""
    demo = tmp_path / "runs" / "demo"
    touch(demo / "config.json", json.dumps({"train": "nih/train-small.csv", "image_size": 320}))
    touch(demo / "history.csv", "epoch,loss,val_loss,val_mean_auc,lr\n1,0.5,0.6,0.55,0.0001\n2,0.4,0.5,0.6,0.0001\n")
    touch(demo / "best.keras")
    touch(demo / "eval-test" / "metrics.json", json.dumps({"n_images": 55, "mean_auc": 0.61}))
    touch(demo / "eval-valid" / "metrics.json", "{}")
    unfinished = tmp_path / "runs" / "unfinished"
    touch(unfinished / "checkpoints" / "epoch-001.keras")
    touch(unfinished / "checkpoints" / "epoch-002.keras")
    old = time.time() - 100
    os.utime(unfinished / "checkpoints" / "epoch-001.keras", (old, old))
    (tmp_path / "runs" / "empty").mkdir()
    touch(tmp_path / "scratch" / "baseline" / "metrics.json", "{}")
    return tmp_path


def test_find_runs(artifacts):
    found = {run.name: run for run in runs.find_runs(artifacts)}
    assert list(found) == ["demo", "unfinished"]  # the empty folder is no run
    demo = found["demo"]
    assert demo.checkpoint == artifacts / "runs" / "demo" / "best.keras"
    assert [p.name for p in demo.evaluations] == ["eval-test", "eval-valid"]
    unfinished = found["unfinished"]
    assert unfinished.checkpoint.name == "epoch-002.keras"  # no best.keras yet: the newest checkpoint
    assert len(unfinished.checkpoints) == 2 and unfinished.evaluations == ()


def test_find_evaluations_anywhere_under_artifacts(artifacts):
    names = [paths.shorten(path, artifacts) for path in runs.find_evaluations(artifacts)]
    assert names == ["runs/demo/eval-test", "runs/demo/eval-valid", "scratch/baseline"]


def test_missing_artifacts_folder_has_no_runs(tmp_path):
    assert runs.find_runs(tmp_path / "nowhere") == [] and runs.find_evaluations(tmp_path / "nowhere") == []


def test_read_config_history_and_metrics(artifacts):
    demo = artifacts / "runs" / "demo"
    assert runs.read_config(demo)["image_size"] == 320
    assert runs.read_config(artifacts / "runs" / "unfinished") == {}
    history = runs.read_history(demo)
    assert history["epoch"].tolist() == [1, 2] and "val_mean_auc" in history
    assert runs.read_history(artifacts / "runs" / "unfinished") is None


def test_broken_files_give_one_line(artifacts):
    demo = artifacts / "runs" / "demo"
    (demo / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON") as error:
        runs.read_config(demo)
    assert "\n" not in str(error.value)
    (demo / "history.csv").write_text("step,loss\n1,0.5\n")
    with pytest.raises(InputError, match="no 'epoch' column"):
        runs.read_history(demo)
    (demo / "history.csv").write_text('epoch,loss\n1,"0.5\n')  # cut inside a quoted field
    with pytest.raises(InputError, match="cannot be read as CSV"):
        runs.read_history(demo)



def test_the_run_and_evaluation_shown_first(tmp_path):
    """The dashboard opens on the shipped demo run, else a run with a checkpoint and an evaluation, else one with
    a checkpoint; a run is judged by its test evaluation, else its first."""
    bare, trained, evaluated = (tmp_path / "runs" / name for name in ("a-bare", "b-trained", "c-evaluated"))
    touch(bare / "config.json", "{}")
    touch(trained / "best.keras")
    touch(evaluated / "best.keras")
    touch(evaluated / "eval-valid" / "metrics.json", "{}")
    found = runs.find_runs(tmp_path)
    assert runs.default_run(found).name == "c-evaluated"
    assert runs.headline_evaluation(runs.default_run(found)).name == "eval-valid"
    touch(evaluated / "eval-test" / "metrics.json", "{}")
    touch(tmp_path / "runs" / runs.DEMO_RUN / "best.keras")
    found = runs.find_runs(tmp_path)
    assert runs.default_run(found).name == runs.DEMO_RUN
    assert runs.headline_evaluation(next(r for r in found if r.name == "c-evaluated")).name == "eval-test"
    assert runs.headline_evaluation(next(r for r in found if r.name == "b-trained")) is None
    assert runs.default_run([r for r in found if r.name == "a-bare"]).name == "a-bare"
    assert runs.default_run([]) is None
