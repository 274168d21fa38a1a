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

The state between epochs is a `RunState` (it is ``state.json``, same keys as before it was typed, so older
run folders resume); `RunState.after_epoch` is the one place where an epoch's result moves it on: best AUC,
the learning-rate plateau rule and early stopping. The settings of a run are one `TrainSettings` (they are
the settings part of ``config.json``). `pipeline.training.runs` finds run folders by these names.

This module stays whole (about 465 lines) because it is the run folder's one owner (issue 17): file names,
typed state and settings, the config record, resume checks, and the TensorBoard event files (written with or
without TensorFlow, read without it) are one format, changed together.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
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
RESUME_SETTINGS = (
    "image_size", "batch_size", "lr", "weights", "init_from", "loss", "seed", "mixed_precision", "network"
)

SETTING_DEFAULTS = {"network": "densenet121"}  # settings that runs made before they existed had implicitly


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides what a run trains, as ``config.json`` records it (`pipeline.training.loop.train`)."""

    train: str
    valid: str
    images: str | None = None
    image_size: int = 320
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    weights: str = "imagenet"
    init_from: str | None = None
    loss: str = "weighted"
    patience: int = 5
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    network: str = "densenet121"

    def record(self, init_sha256: str | None = None) -> dict[str, Any]:
        """The settings as ``config.json`` spells them (``init_from`` with the checkpoint's hash, if any)."""
        entries = asdict(self)
        entries["weights"] = "none" if self.init_from is not None else self.weights
        entries["init_from"] = None if self.init_from is None else {"path": self.init_from, "sha256": init_sha256}
        return entries


@dataclass(frozen=True)
class RunState:
    """Where a run stands between epochs: ``state.json``, read and written only through this type.

    ``history`` holds one row per complete epoch (the columns of `HISTORY_COLUMNS`); ``checkpoint`` is the
    last complete epoch's checkpoint, relative to the run folder.
    """

    lr: float
    seed: int
    epoch: int = 0
    checkpoint: str | None = None
    optimizer_iterations: int = 0
    best_auc: float | None = None
    best_epoch: int = 0
    epochs_without_gain: int = 0
    epochs_on_plateau: int = 0
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def finished(self, epochs: int, patience: int) -> bool:
        """Whether the run is over: all ``epochs`` done, or ``patience`` epochs without a validation gain."""
        return self.epoch >= epochs or self.epochs_without_gain >= patience

    def after_epoch(self, row: dict[str, Any], checkpoint: str, iterations: int) -> RunState:
        """The state after an epoch: best AUC, plateau and early-stopping counters, learning rate for the next."""
        gain = self.best_auc is None or row["val_mean_auc"] > self.best_auc
        lr, plateau = self.lr, 0 if gain else self.epochs_on_plateau + 1
        if plateau >= LR_PLATEAU_EPOCHS:
            lr, plateau = lr * LR_FACTOR, 0
        return replace(
            self,
            epoch=row["epoch"],
            checkpoint=checkpoint,
            optimizer_iterations=iterations,
            best_auc=row["val_mean_auc"] if gain else self.best_auc,
            best_epoch=row["epoch"] if gain else self.best_epoch,
            lr=lr,
            epochs_without_gain=0 if gain else self.epochs_without_gain + 1,
            epochs_on_plateau=plateau,
            history=(*self.history, row),
        )

    def to_json(self) -> dict[str, Any]:
        """``state.json``'s object, its keys in the order the untyped state wrote them."""
        order = ("epoch", "checkpoint", "optimizer_iterations", "best_auc", "best_epoch", "lr",
                 "epochs_without_gain", "epochs_on_plateau", "seed")
        return {**{key: getattr(self, key) for key in order}, "history": list(self.history)}

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path) -> RunState:
        """The state stored in ``path``; a file missing a field is refused in one line."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise InputError(f"{path}: no {', '.join(missing)}; the run folder is damaged, start a new run")
        return cls(**{**{k: data[k] for k in names}, "history": tuple(data["history"])})


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


def read_for_resume(out: Path, config: dict[str, Any], log: Callable[[str], Any]) -> RunState | None:
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
        if saved.get(key, SETTING_DEFAULTS.get(key)) != config.get(key)
    ]
    if changed:
        raise InputError(
            f"`resume`: settings differ from run {out} ({'; '.join(changed)}); "
            "pass the original values, or start a new run in another folder"
        )
    for key in ("epochs", "patience"):
        if saved.get(key) != config[key]:
            log(f"resume: {key} {saved.get(key)} -> {config[key]}")
    state = read_state(out) if (out / STATE).is_file() else None
    if state is not None and state.finished(config["epochs"], config["patience"]):
        return state
    resumed = {"at": now(), "after_epoch": state.epoch if state else 0, "strategy": config.get("strategy"),
               "backend": config.get("backend")}
    updated = {**saved, "epochs": config["epochs"], "patience": config["patience"]}
    updated["resumed"] = [*saved.get("resumed", []), resumed]
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(updated, out / CONFIG)
    remove_leftovers(out, state.epoch if state else 0)
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


def best_needs_rewrite(state: RunState | None) -> bool:
    """A crash between ``state.json`` and ``best.keras`` leaves the old best; its checkpoint is then still kept."""
    if state is None or state.best_epoch == 0:
        return False
    return state.best_epoch >= state.epoch - (KEEP_CHECKPOINTS - 1)


def checkpoint_path(out: Path, epoch: int) -> Path:
    return out / CHECKPOINTS / f"epoch-{epoch:03d}.keras"


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's shuffle and augmentation: the epoch number is all a resumed run needs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def run_config(settings: dict[str, Any], train_source: Any, valid_source: Any) -> dict[str, Any]:
    """Everything ``config.json`` records: the settings plus backend, data hashes, sizes, class frequencies, versions.

    ``settings`` is `TrainSettings.record` plus the distribution (``strategy``); ``train_source`` and
    ``valid_source`` are `pipeline.data.input_pipeline.Source` objects (their labels and hashes).
    """
    import keras

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
        "backend": keras.backend.backend(),
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
            **_framework_versions(),
            "keras": keras.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
        "created": now(),
    }


def write_tensorboard(out: Path, state: RunState) -> None:
    """Log the history's epochs that TensorBoard has not seen yet (one scalar series per history column).

    Written by TensorFlow's summary writer under the TensorFlow backend, else by tensorboardX, which needs no
    TensorFlow; both write the same event files.
    """
    folder = out / TENSORBOARD
    logged = _logged_epochs(folder)
    rows = [row for row in state.history if row["epoch"] > logged]
    if not rows:
        return
    scalars = [
        (key.replace("val_auc_", "val_auc/") if key.startswith("val_auc_") else key, float(value), row["epoch"])
        for row in rows
        for key, value in row.items()
        if key != "epoch" and value is not None and np.isfinite(value)
    ]
    if _backend() == "tensorflow":
        import tensorflow as tf

        writer = tf.summary.create_file_writer(os.fspath(folder))
        with writer.as_default():
            for name, value, step in scalars:
                tf.summary.scalar(name, value, step=step)
        writer.close()
        return
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return  # nothing to write with; history.csv holds the same numbers
    writer = SummaryWriter(os.fspath(folder))
    for name, value, step in scalars:
        writer.add_scalar(name, value, global_step=step)
    writer.close()


def _logged_epochs(folder: Path) -> int:
    """The last epoch already in the TensorBoard event files (0 when none), read without TensorFlow.

    Event files are TFRecord files: per record an 8-byte length, a 4-byte CRC, the Event, a 4-byte CRC. A file
    that a kill cut short counts up to its last whole record.
    """
    last = 0
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        at = 0
        while at + 12 <= len(data):
            size = int.from_bytes(data[at : at + 8], "little")
            if at + 12 + size + 4 > len(data):
                break
            last = max(last, _event_step(data[at + 12 : at + 12 + size]))
            at += 12 + size + 4
    return last


def _event_step(record: bytes) -> int:
    """The ``step`` field (number 2, a varint) of a serialized Event; 0 when absent."""
    at = 0
    while at < len(record):
        key, at = _varint(record, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _varint(record, at)
            if number == 2:
                return value
        elif kind == 1:
            at += 8
        elif kind == 2:
            size, at = _varint(record, at)
            at += size
        elif kind == 5:
            at += 4
        else:
            return 0
    return 0


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while at < len(data):
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            break
    return value, at


def history_frame(state: RunState | None) -> pd.DataFrame:
    """The state's history as a DataFrame in the column order of ``history.csv`` (empty for None)."""
    frame = pd.DataFrame(list(state.history) if state else [], columns=HISTORY_COLUMNS)
    return frame.astype({column: float for column in HISTORY_COLUMNS if column != "epoch"})  # None -> NaN


def write_history(out: Path, state: RunState) -> None:
    write_csv_atomic(history_frame(state), out / HISTORY)


def write_state(out: Path, state: RunState) -> None:
    write_json_atomic(state.to_json(), out / STATE)


def read_state(out: Path) -> RunState:
    return RunState.from_json(read_json(out / STATE), out / STATE)


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


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _framework_versions() -> dict[str, str]:
    """Versions of the installed frameworks (TensorFlow may serve the input pipeline under any backend)."""
    import importlib.metadata

    versions = {}
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("jax", ("jax",)), ("jaxlib", ("jaxlib",))):
        for dist in dists:
            try:
                versions[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def _per_finding(values: np.ndarray) -> dict[str, float]:
    return {finding: float(value) for finding, value in zip(FINDINGS, values, strict=True)}
