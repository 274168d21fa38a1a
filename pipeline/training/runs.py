"""Find training runs, checkpoints and evaluations under an artifacts folder, and read what they record.

The layout, written by `pipeline.training.loop` and `pipeline.evaluation.evaluate` (evaluation folders are read through
`pipeline.evaluation.results`)::

    artifacts/runs/<name>/config.json     how the run was made
                          history.csv     one row per epoch
                          best.keras      the checkpoint with the best validation AUC
                          checkpoints/    one .keras per epoch
                          eval-<set>/     metrics.json, predictions.csv, roc.csv, ...

Any folder under the artifacts folder holding a ``metrics.json`` counts as an evaluation, so evaluations
written elsewhere (e.g. ``artifacts/scratch/``) are found too. Only small text files are read here, never
a model, so the dashboard can list runs without importing TensorFlow. The file names are those of
`pipeline.training.run_folder`, which owns the run folder's format. The default artifacts folder is
`pipeline.core.paths.artifacts_dir`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.errors import InputError, reason
from pipeline.core.files import read_json_object
from pipeline.evaluation.results import METRICS_JSON
from pipeline.training.run_folder import BEST, CHECKPOINTS, CONFIG, HISTORY

DEMO_RUN = "densenet121-128-weighted"  # the run whose checkpoint ships with the repository (README, Demo model)


@dataclass(frozen=True)
class Run:
    """One run folder: its checkpoints and evaluations, as paths."""

    name: str
    path: Path
    checkpoint: Path | None  # best.keras, else the newest of checkpoints/*.keras
    checkpoints: tuple[Path, ...]
    evaluations: tuple[Path, ...]


def find_runs(artifacts: str | Path) -> list[Run]:
    """Every folder under ``<artifacts>/runs/`` with a config, a history, a checkpoint or an evaluation, by name."""
    runs = []
    for folder in sorted(Path(artifacts, "runs").glob("*/")):
        found = folder.glob(f"{CHECKPOINTS}/[!.]*.keras")
        checkpoints = tuple(sorted(found, key=lambda p: (p.stat().st_mtime, p.name)))
        best = folder / BEST
        checkpoint = best if best.is_file() else (checkpoints[-1] if checkpoints else None)
        evaluations = run_evaluations(folder)
        has_record = (folder / CONFIG).is_file() or (folder / HISTORY).is_file()
        if checkpoint or evaluations or has_record:
            runs.append(Run(folder.name, folder, checkpoint, checkpoints, evaluations))
    return runs


def run_evaluations(run_dir: str | Path) -> tuple[Path, ...]:
    """The evaluation folders (``*/metrics.json``) directly inside one run folder, sorted."""
    return tuple(sorted(p.parent for p in Path(run_dir).glob(f"*/{METRICS_JSON}")))


def find_evaluations(artifacts: str | Path) -> list[Path]:
    """Every folder under ``artifacts`` that holds a ``metrics.json``, sorted by path."""
    return sorted(path.parent for path in Path(artifacts).rglob(METRICS_JSON))


def read_config(run_dir: str | Path) -> dict:
    """The run's ``config.json``, or ``{}`` when the run has none."""
    path = Path(run_dir) / CONFIG
    return read_json_object(path, "rewrite or delete it") if path.is_file() else {}


def read_history(run_dir: str | Path) -> pd.DataFrame | None:
    """The run's ``history.csv`` (one row per epoch), or None when the run has none."""
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return None
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({reason(exc)}); the run may still be writing it") from None
    if "epoch" not in history.columns:
        raise InputError(f"{path}: no 'epoch' column; expected the history.csv written by `python -m pipeline train`")
    return history


# --- which run and which evaluation the dashboard shows first -------------------------------------------------

HEADLINE_EVALUATION = "eval-test"  # the evaluation folder a run is judged by, when it has one


def default_run(found: list[Run]) -> Run | None:
    """The run to show first: the shipped demo run, else the first with a checkpoint and an evaluation, else the
    first with a checkpoint, else the first; None when there is none."""
    for wanted in (
        lambda r: r.name == DEMO_RUN and r.checkpoint,
        lambda r: r.checkpoint and r.evaluations,
        lambda r: r.checkpoint,
    ):
        for run in found:
            if wanted(run):
                return run
    return found[0] if found else None


def headline_evaluation(evaluations: Sequence[Path]) -> Path | None:
    """The evaluation a run is judged by (`Run.evaluations` or `run_evaluations`): on the test set
    (`HEADLINE_EVALUATION`), else its first, else None. The dashboard and `predict`'s thresholds both use it."""
    for path in evaluations:
        if path.name == HEADLINE_EVALUATION:
            return path
    return evaluations[0] if evaluations else None
