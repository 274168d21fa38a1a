"""The training run folder: its files, the state machine between epochs, and resuming after a kill.

A run folder holds::

    RUN_DIR/config.json                  every setting, library versions, hashes of the data, sizes, frequencies
            history.csv                  one row per complete epoch: losses, mean and per-finding validation AUC
            state.json                   what --resume needs: last complete epoch, best AUC, learning rate, counters
            best.keras                   the model of the best validation mean AUC, float32, no optimizer state
            checkpoints/epoch-NNN.keras  the last two epochs, each with its optimizer state
            tensorboard/                 TensorBoard event files (`tensorboard --logdir RUN_DIR`)

Crash safety. Every file is written under a temporary name and renamed into place. After each epoch the
order is: checkpoint, ``state.json``, ``best.keras``, ``history.csv``. The state only ever points to a
checkpoint that is complete, and whatever comes after it is rebuilt from the state on resume, so a run
killed at any moment resumes from its last complete epoch with nothing lost or repeated. Only the chief
worker of a distributed run calls the functions that write here.

The state is a plain dict (it is ``state.json``); `next_state` is the one place where an epoch's result
moves it on: best AUC, the learning-rate plateau rule and early stopping.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.files import read_json_object, write_csv_atomic, write_json_atomic
from pipeline.core.findings import FINDINGS

CONFIG = "config.json"
STATE = "state.json"
HISTORY = "history.csv"
BEST = "best.keras"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
KEEP_CHECKPOINTS = 2

LR_FACTOR = 0.5  # learning rate reduction on a validation AUC plateau ...
LR_PLATEAU_EPOCHS = 2  # ... of this many epochs

HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "val_loss",
    "val_mean_auc",
    "lr",
    "seconds",
    *(f"val_auc_{finding}" for finding in FINDINGS),
]
# Settings a resumed run must share with the run it continues; epochs and patience may change.
RESUME_SETTINGS = ("image_size", "batch_size", "lr", "weights", "init_from", "loss", "seed", "mixed_precision")


def check_run_folder(out: Path, resume: bool) -> None:
    """Refuse to start over an existing run, or to resume where there is none."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder for the run")
    holds_run = any((out / name).exists() for name in (CONFIG, STATE, HISTORY, BEST, CHECKPOINTS))
    if holds_run and not resume:
        raise InputError(f"{out} already holds a training run; add `resume` to continue it, or choose another folder")
    if resume and not (out / CONFIG).is_file():
        raise InputError(f"{out}: no run to resume (no {CONFIG}); drop `resume` to start a new run there")


def start(out: Path, config: dict[str, Any]) -> None:
    """Create the run folder with its ``config.json`` first, so a run killed from here on can be resumed."""
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config, out / CONFIG)
    (out / CHECKPOINTS).mkdir(exist_ok=True)


def read_for_resume(out: Path, config: dict[str, Any], log: Callable[[str], Any]) -> dict[str, Any] | None:
    """Check the saved config matches ``config``, tidy what a crash left, and return the saved state (or None).

    None means the run was killed before its first epoch completed: it starts again from scratch.
    """
    saved = read_json(out / CONFIG)
    for key, what in (("train_sha256", "training"), ("valid_sha256", "validation")):
        if saved.get(key) != config[key]:
            raise InputError(
                f"`resume`: the {what} data differs from the data run {out} was started with (SHA-256 of the labels); "
                "resume with the same data, or start a new run in another folder"
            )
    changed = [
        f"{key} {saved.get(key)!r} -> {config.get(key)!r}"
        for key in RESUME_SETTINGS
        if saved.get(key) != config.get(key)
    ]
    if changed:
        raise InputError(
            f"`resume`: settings differ from run {out} ({'; '.join(changed)}); "
            "pass the original values, or start a new run in another folder"
        )
    for key in ("epochs", "patience"):
        if saved.get(key) != config[key]:
            log(f"resume: {key} {saved.get(key)} -> {config[key]}")
    state = read_json(out / STATE) if (out / STATE).is_file() else None
    if state is not None and finished(state, config["epochs"], config["patience"]):
        return state
    resumed = {"at": now(), "after_epoch": state["epoch"] if state else 0, "strategy": config.get("strategy")}
    updated = {**saved, "epochs": config["epochs"], "patience": config["patience"]}
    updated["resumed"] = [*saved.get("resumed", []), resumed]
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(updated, out / CONFIG)
    remove_leftovers(out, state["epoch"] if state else 0)
    return state


def check_same_data(out: Path, train_sha256: str, valid_sha256: str, use: str) -> str | None:
    """Refuse (`InputError`) label files other than the ones run ``out`` was trained on, by their SHA-256.

    ``use`` names what needs them (``export``: its typicality threshold is fitted to them, so other images
    would move it, e.g. from 66,133 to 179). Returns a warning instead when the run records no hashes (a
    run folder made by hand or by an older version), since then there is nothing to check against.
    """
    if not (out / CONFIG).is_file():
        return f"{out} has no {CONFIG}: cannot check that these are the run's own training and validation labels"
    saved = read_json(out / CONFIG)
    for part, what, given in (("train", "training", train_sha256), ("valid", "validation", valid_sha256)):
        key = f"{part}_sha256"
        if key not in saved:
            return f"{out / CONFIG} records no {key}: cannot check that these are the run's own {what} labels"
        if saved[key] != given:
            recorded = saved.get(part, "as recorded there")
            raise InputError(
                f"{use}: these {what} labels differ from the ones run {out} was trained with (SHA-256 in "
                f"{CONFIG}); give the run's own {what} labels ({recorded})"
            )
    return None


def best_needs_rewrite(state: dict[str, Any] | None) -> bool:
    """A crash between ``state.json`` and ``best.keras`` leaves the old best; its checkpoint is then still kept."""
    if state is None or state["best_epoch"] == 0:
        return False
    return state["best_epoch"] >= state["epoch"] - (KEEP_CHECKPOINTS - 1)


def checkpoint_path(out: Path, epoch: int) -> Path:
    return out / CHECKPOINTS / f"epoch-{epoch:03d}.keras"


def initial_state(lr: float, seed: int) -> dict[str, Any]:
    return {
        "epoch": 0,
        "checkpoint": None,
        "optimizer_iterations": 0,
        "best_auc": None,
        "best_epoch": 0,
        "lr": lr,
        "epochs_without_gain": 0,
        "epochs_on_plateau": 0,
        "seed": seed,
        "history": [],
    }


def next_state(state: dict[str, Any], row: dict[str, Any], checkpoint: str, iterations: int) -> dict[str, Any]:
    """The state after an epoch: best AUC, plateau and early-stopping counters, learning rate for the next one."""
    gain = state["best_auc"] is None or row["val_mean_auc"] > state["best_auc"]
    lr, plateau = state["lr"], 0 if gain else state["epochs_on_plateau"] + 1
    if plateau >= LR_PLATEAU_EPOCHS:
        lr, plateau = lr * LR_FACTOR, 0
    return {
        **state,
        "epoch": row["epoch"],
        "checkpoint": checkpoint,
        "optimizer_iterations": iterations,
        "best_auc": row["val_mean_auc"] if gain else state["best_auc"],
        "best_epoch": row["epoch"] if gain else state["best_epoch"],
        "lr": lr,
        "epochs_without_gain": 0 if gain else state["epochs_without_gain"] + 1,
        "epochs_on_plateau": plateau,
        "history": [*state["history"], row],
    }


def finished(state: dict[str, Any], epochs: int, patience: int) -> bool:
    return state["epoch"] >= epochs or state["epochs_without_gain"] >= patience


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation: the epoch number is all a resumed run needs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def run_config(settings: dict[str, Any], train_source: Any, valid_source: Any) -> dict[str, Any]:
    """Everything ``config.json`` records: the settings plus data hashes, sizes, class frequencies, versions.

    ``train_source`` and ``valid_source`` are `pipeline.data.input_pipeline.Source` objects (their labels and hashes).
    """
    import keras
    import tensorflow as tf

    from pipeline.data import input_pipeline, label_files
    from pipeline.networks.losses import class_weights

    train_table, valid_table = train_source.table, valid_source.table
    freq_pos, _ = label_files.compute_class_freqs(train_table)
    valid_freq_pos, _ = label_files.compute_class_freqs(valid_table)
    loss_weights = None
    if settings["loss"] == "weighted":
        pos_weights, neg_weights = class_weights(train_table)
        loss_weights = {"pos": _per_finding(pos_weights), "neg": _per_finding(neg_weights)}
    return {
        **settings,
        "optimizer": "adam",
        "lr_schedule": {"reduce_on_plateau": {"factor": LR_FACTOR, "epochs": LR_PLATEAU_EPOCHS}},
        "augmentation": {
            "rotation_degrees": input_pipeline.ROTATION_DEGREES,
            "shift": input_pipeline.SHIFT,
            "zoom": input_pipeline.ZOOM,
            "contrast": input_pipeline.CONTRAST,
            "horizontal_flip": False,
        },
        "findings": list(FINDINGS),
        "train_prepared": train_source.prepared,
        "valid_prepared": valid_source.prepared,
        "train_sha256": train_source.sha256,
        "valid_sha256": valid_source.sha256,
        "n_train": len(train_table),
        "n_valid": len(valid_table),
        "train_patients": int(train_table["PatientId"].nunique()),
        "valid_patients": int(valid_table["PatientId"].nunique()),
        "train_freq_pos": _per_finding(freq_pos),
        "valid_freq_pos": _per_finding(valid_freq_pos),
        "loss_weights": loss_weights,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "created": now(),
    }


def write_tensorboard(out: Path, state: dict[str, Any]) -> None:
    """Log the history's epochs that TensorBoard has not seen yet (one scalar series per history column)."""
    import tensorflow as tf

    folder = out / TENSORBOARD
    logged = _logged_epochs(folder)
    rows = [row for row in state["history"] if row["epoch"] > logged]
    if not rows:
        return
    writer = tf.summary.create_file_writer(os.fspath(folder))
    with writer.as_default():
        for row in rows:
            for key, value in row.items():
                if key == "epoch" or value is None or not np.isfinite(value):
                    continue
                name = key.replace("val_auc_", "val_auc/") if key.startswith("val_auc_") else key
                tf.summary.scalar(name, value, step=row["epoch"])
    writer.close()


def _logged_epochs(folder: Path) -> int:
    """The last epoch already in the TensorBoard event files (0 when none)."""
    import tensorflow as tf

    last = 0
    for path in folder.glob("events.out.tfevents.*"):
        try:
            for record in tf.data.TFRecordDataset(os.fspath(path)):
                last = max(last, int(tf.compat.v1.Event.FromString(record.numpy()).step))
        except tf.errors.DataLossError:  # a file a kill cut short: what it holds up to there still counts
            continue
    return last


def history_frame(state: dict[str, Any]) -> pd.DataFrame:
    """The state's history as a DataFrame in the column order of ``history.csv``."""
    frame = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    return frame.astype({column: float for column in HISTORY_COLUMNS if column != "epoch"})  # None -> NaN


def write_history(out: Path, state: dict[str, Any]) -> None:
    write_csv_atomic(history_frame(state), out / HISTORY)


def write_state(out: Path, state: dict[str, Any]) -> None:
    write_json_atomic(state, out / STATE)


def remove_old_checkpoints(out: Path, last_epoch: int) -> None:
    """Keep the checkpoints of the last `KEEP_CHECKPOINTS` complete epochs; drop older ones and any later ones."""
    for path in (out / CHECKPOINTS).glob("epoch-*.keras"):
        epoch = int(path.stem.removeprefix("epoch-"))
        if epoch <= last_epoch - KEEP_CHECKPOINTS or epoch > last_epoch:
            path.unlink(missing_ok=True)


def remove_leftovers(out: Path, last_epoch: int) -> None:
    """Temporary files of writes a crash interrupted, and checkpoints of an epoch that never completed."""
    for path in out.glob(".*.tmp*"):  # files.write_atomic's .NAME.*.tmp, model.save's .NAME.PID.tmp.keras, ...
        path.unlink(missing_ok=True)
    for path in (out / CHECKPOINTS).glob(".epoch-*.keras"):
        path.unlink(missing_ok=True)
    remove_old_checkpoints(out, last_epoch)


def read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "the run folder is damaged; start a new run")


def format_auc(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _per_finding(values: np.ndarray) -> dict[str, float]:
    return {finding: float(value) for finding, value in zip(FINDINGS, values, strict=True)}
