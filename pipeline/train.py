"""Train the DenseNet121 on a label file: tf.data input, class-weighted loss, validation AUC, resumable runs.

A run folder holds::

    RUN_DIR/config.json                  every setting, library versions, SHA-256 of both CSVs, sizes, frequencies
            history.csv                  one row per complete epoch: losses, mean and per-finding validation AUC
            state.json                   what --resume needs: last complete epoch, best AUC, learning rate, counters
            best.keras                   the model of the best validation mean AUC, without optimizer state
            checkpoints/epoch-NNN.keras  the last two epochs, each with its optimizer state

Input pipeline. Images are decoded by `pipeline.imaging` (the same code as the CLI and the app, wrapped in
`tf.numpy_function`), in parallel, once: the decoded images are cached in memory. Each epoch then shuffles
them and applies light augmentation suited to chest X-rays: rotation up to 6 degrees, shifts up to 5 %,
zoom up to 10 %, contrast up to 10 %. There are no horizontal flips: the anatomy is lateralised (the heart
lies on the left, and dextrocardia is itself a finding), so a flipped film is not a plausible X-ray. The
augmentation lives in the input pipeline, not in the model, so checkpoints hold only what inference needs.

Randomness. ``keras.utils.set_random_seed(seed)`` fixes the initial weights, and every epoch's shuffle
and augmentation are seeded from ``(seed, epoch)``, so the epoch number is the whole random state a
resumed run needs, and it sees the same images in the same order as an uninterrupted one.

Crash safety. Every file is written under a temporary name and renamed into place. After each epoch the
order is: checkpoint, ``state.json``, ``best.keras``, ``history.csv``. The state only ever points to a
checkpoint that is complete, and whatever comes after it is rebuilt from the state by ``--resume``, so a
run killed at any moment resumes from its last complete epoch with nothing lost or repeated.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import data, imaging, metrics
from pipeline import model as model_lib
from pipeline.errors import InputError
from pipeline.files import sha256_of, write_csv_atomic, write_json_atomic
from pipeline.findings import FINDINGS
from pipeline.losses import WeightedBinaryCrossentropy, class_weights

CONFIG = "config.json"
STATE = "state.json"
HISTORY = "history.csv"
BEST = "best.keras"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2

LR_FACTOR = 0.5  # learning rate reduction on a validation AUC plateau ...
LR_PLATEAU_EPOCHS = 2  # ... of this many epochs

ROTATION_DEGREES = 6.0
SHIFT = 0.05
ZOOM = 0.10
CONTRAST = 0.10

HISTORY_COLUMNS = [
    "epoch",
    "loss",
    "val_loss",
    "val_mean_auc",
    "lr",
    "seconds",
    *(f"val_auc_{finding}" for finding in FINDINGS),
]
# Settings a resumed run must share with the run it continues; --epochs and --patience may change.
RESUME_SETTINGS = ("image_size", "batch_size", "lr", "weights", "loss", "seed")


def train_from_args(args: argparse.Namespace) -> pd.DataFrame:
    """Run `train` with the options of ``python -m pipeline train``."""
    return train(
        args.train,
        args.valid,
        args.images,
        args.out,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weights=args.weights,
        loss=args.loss,
        patience=args.patience,
        seed=args.seed,
        resume=args.resume,
        log=lambda line: print(line, flush=True),
    )


def train(
    train_csv: str | os.PathLike[str],
    valid_csv: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    image_size: int = 320,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-4,
    weights: str | os.PathLike[str] = "imagenet",
    loss: str = "weighted",
    patience: int = 5,
    seed: int = 0,
    resume: bool = False,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Train a DenseNet121 on ``train_csv``, validating on ``valid_csv`` after every epoch.

    Parameters
    ----------
    train_csv, valid_csv
        Label files in either format `pipeline.data.load_labels` reads; every image must be in ``images_dir``.
    out_dir
        The run folder (see the module docstring). It must not hold a run unless ``resume`` is true.
    image_size, weights
        Input side in pixels and initial weights (``"imagenet"``, ``"none"`` or a path), as `pipeline.model.build`.
    epochs, batch_size, lr
        Number of epochs in all (a resumed run counts those already done), batch size, initial Adam learning rate.
    loss
        ``"weighted"``: `WeightedBinaryCrossentropy` with weights from the training labels; ``"plain"``: BCE.
    patience
        Stop after this many epochs without a gain in validation mean AUC.
    resume
        Continue the run in ``out_dir`` from its last complete epoch, with the same data and settings.
    log
        Receives one line per event (a summary per epoch); a progress bar goes to stderr when it is a terminal.

    Returns
    -------
    pandas.DataFrame
        The history, one row per epoch, as written to ``history.csv``.
    """
    _check_options(image_size, epochs, batch_size, lr, loss, patience, seed)
    out = Path(out_dir)
    _check_run_folder(out, resume)

    train_table = data.load_labels(train_csv, images_dir)
    valid_table = data.load_labels(valid_csv, images_dir)
    y_valid = data.label_matrix(valid_table).astype(np.float32)
    if not any(metrics.has_both_classes(column) for column in y_valid.T):
        raise InputError(
            f"{Path(valid_csv).name}: no finding has both positive and negative images, so validation AUC is "
            "undefined; use a larger validation set"
        )

    settings = {
        "train": os.fspath(train_csv),
        "valid": os.fspath(valid_csv),
        "images": os.fspath(images_dir),
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weights": os.fspath(weights),
        "loss": loss,
        "patience": patience,
        "seed": seed,
    }
    config = run_config(settings, train_table, valid_table)
    state = _start_or_resume(out, config, resume, log)
    if state is not None and _finished(state, epochs, patience):
        _write_history(out, state)
        reason = f"all {epochs} epochs" if state["epoch"] >= epochs else f"early stop after {state['epoch']} epochs"
        log(f"{out}: already complete ({reason}), nothing to resume")
        return history_frame(state)

    keras.utils.set_random_seed(seed)
    loss_fn = make_loss(loss, train_table)
    if state is None:
        net = model_lib.build(image_size, weights)
        net.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=loss_fn)
        state = _initial_state(lr, seed)
        log(f"new run in {out}: {len(train_table)} training and {len(valid_table)} validation images")
    else:
        net = _load_for_resume(out, state)
        log(
            f"resuming {out} after epoch {state['epoch']} (optimizer step {state['optimizer_iterations']}, "
            f"lr {state['lr']:.1e}, best val_mean_auc {_format_auc(state['best_auc'])})"
        )
    _write_history(out, state)  # brings a history.csv left behind by a crash back in line with the state

    train_images = decoded_dataset(train_table, images_dir, image_size)
    valid_images = decoded_dataset(valid_table, images_dir, image_size)
    _fill_cache(train_images)
    _fill_cache(valid_images)
    valid_batches = valid_images.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    steps = math.ceil(len(train_table) / batch_size)

    while not _finished(state, epochs, patience):
        epoch = state["epoch"] + 1
        net.optimizer.learning_rate = state["lr"]
        started = time.monotonic()

        fit = net.fit(
            training_batches(train_images, len(train_table), batch_size, _epoch_seed(seed, epoch)),
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[ProgressBar(f"epoch {epoch}/{epochs}", steps)],
        )
        probabilities = net.predict(valid_batches, verbose=0)
        if not np.isfinite(probabilities).all():
            raise InputError(f"training diverged at epoch {epoch} (non-finite predictions); use a lower --lr")
        val_loss = float(keras.ops.convert_to_numpy(loss_fn(y_valid, probabilities)))
        mean_auc, finding_aucs = validation_auc(y_valid, probabilities)

        row = {
            "epoch": epoch,
            "loss": float(fit.history["loss"][0]),
            "val_loss": val_loss,
            "val_mean_auc": mean_auc,
            "lr": state["lr"],
            "seconds": round(time.monotonic() - started, 2),
            **{f"val_auc_{finding}": auc for finding, auc in zip(FINDINGS, finding_aucs, strict=True)},
        }
        previous_lr = state["lr"]
        state = _commit_epoch(out, net, state, row)

        log(
            f"epoch {epoch}/{epochs}  loss {row['loss']:.3f}  val_loss {val_loss:.3f}  "
            f"val_mean_auc {mean_auc:.3f}  lr {row['lr']:.1e}  best {state['best_auc']:.3f}  ({row['seconds']:.0f} s)"
        )
        if state["lr"] < previous_lr:
            log(f"no val_mean_auc gain in {LR_PLATEAU_EPOCHS} epochs: learning rate {state['lr']:.1e}")

    if state["epoch"] < epochs:
        log(f"early stop: no val_mean_auc gain in {state['epochs_without_gain']} epochs (--patience {patience})")
    log(
        f"done: {state['epoch']} epochs, best val_mean_auc {_format_auc(state['best_auc'])} "
        f"at epoch {state['best_epoch']} -> {out / BEST}"
    )
    return history_frame(state)


# --- loss, data, metrics -------------------------------------------------------------------------------------


def make_loss(kind: str, train_table: pd.DataFrame) -> keras.losses.Loss:
    """The training loss: class-weighted BCE with weights from ``train_table`` (``"weighted"``), or plain BCE."""
    if kind == "weighted":
        pos_weights, neg_weights = class_weights(train_table)
        return WeightedBinaryCrossentropy(pos_weights, neg_weights)
    if kind == "plain":
        return keras.losses.BinaryCrossentropy()
    raise InputError(f"--loss {kind}: unknown loss; use weighted or plain")


def decoded_dataset(table: pd.DataFrame, images_dir: str | os.PathLike[str], image_size: int) -> tf.data.Dataset:
    """``(uint8 image [size, size, 1], float32 labels [14])`` pairs, decoded in parallel and cached in memory.

    Decoding goes through `pipeline.imaging`, so training sees exactly the pixels the CLI and the app see.
    """
    paths = [os.fspath(Path(images_dir) / name) for name in table["Image"]]
    labels = data.label_matrix(table).astype(np.float32)

    def decode(path: bytes) -> np.ndarray:
        return imaging.resize(imaging.load_image(path.decode()), image_size)[..., np.newaxis]

    def decode_tf(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (image_size, image_size, 1)), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    return dataset.map(decode_tf, num_parallel_calls=tf.data.AUTOTUNE).cache()


def augmentation(seed: int) -> keras.Sequential:
    """Random rotation, shift, zoom and contrast for batches of 0..255 grayscale X-rays (no flips)."""
    # Black fill at the borders, as on a collimated film, rather than reflected anatomy.
    return keras.Sequential(
        [
            keras.layers.RandomRotation(ROTATION_DEGREES / 360, fill_mode="constant", seed=seed),
            keras.layers.RandomTranslation(SHIFT, SHIFT, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomZoom(ZOOM, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomContrast(CONTRAST, value_range=(0, 255), seed=seed + 3),
        ],
        name="augmentation",
    )


def training_batches(images: tf.data.Dataset, size: int, batch_size: int, seed: int) -> tf.data.Dataset:
    """One epoch of shuffled, augmented float32 batches from `decoded_dataset`, all randomness from ``seed``."""
    augment = augmentation(seed)

    def augment_batch(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return augment(tf.cast(x, tf.float32), training=True), y

    # The augmentation map runs on one thread: its layers draw from a seeded state batch after batch, so
    # the epoch is reproducible. Decoding is cached, so this is a small share of the step time.
    return images.shuffle(size, seed=seed).batch(batch_size).map(augment_batch).prefetch(tf.data.AUTOTUNE)


def validation_auc(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean ROC AUC over the findings where it is defined, and each finding's AUC (None without both classes)."""
    aucs = [metrics.roc_auc(y_true[:, i], probabilities[:, i]) for i in range(y_true.shape[1])]
    defined = [auc for auc in aucs if auc is not None]
    return (float(np.mean(defined)) if defined else math.nan), aucs


def history_frame(state: dict[str, Any]) -> pd.DataFrame:
    """The state's history as a DataFrame in the column order of ``history.csv``."""
    frame = pd.DataFrame(state["history"], columns=HISTORY_COLUMNS)
    return frame.astype({column: float for column in HISTORY_COLUMNS if column != "epoch"})  # None -> NaN


def run_config(settings: dict[str, Any], train_table: pd.DataFrame, valid_table: pd.DataFrame) -> dict[str, Any]:
    """Everything ``config.json`` records: the settings plus data hashes, sizes, class frequencies, versions."""
    freq_pos, _ = data.compute_class_freqs(train_table)
    valid_freq_pos, _ = data.compute_class_freqs(valid_table)
    loss_weights = None
    if settings["loss"] == "weighted":
        pos_weights, neg_weights = class_weights(train_table)
        loss_weights = {"pos": _per_finding(pos_weights), "neg": _per_finding(neg_weights)}
    return {
        **settings,
        "optimizer": "adam",
        "lr_schedule": {"reduce_on_plateau": {"factor": LR_FACTOR, "epochs": LR_PLATEAU_EPOCHS}},
        "augmentation": {
            "rotation_degrees": ROTATION_DEGREES,
            "shift": SHIFT,
            "zoom": ZOOM,
            "contrast": CONTRAST,
            "horizontal_flip": False,
        },
        "findings": list(FINDINGS),
        "train_sha256": sha256_of(settings["train"]),
        "valid_sha256": sha256_of(settings["valid"]),
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
        "created": _now(),
    }


class ProgressBar(keras.callbacks.Callback):
    """A one-line progress bar for the training steps of an epoch, on stderr and only when it is a terminal."""

    def __init__(self, title: str, steps: int, width: int = 30) -> None:
        super().__init__()
        self.title, self.steps, self.width = title, steps, width
        self.enabled = sys.stderr.isatty()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.enabled:
            return
        done = min(batch + 1, self.steps)
        filled = self.width * done // self.steps
        bar = "=" * filled + (">" if filled < self.width else "") + "." * (self.width - filled - 1)
        loss = f"  loss {logs['loss']:.3f}" if logs and "loss" in logs else ""
        sys.stderr.write(f"\r{self.title}  {done}/{self.steps} [{bar}]{loss}")
        sys.stderr.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.enabled:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


# --- the run folder ------------------------------------------------------------------------------------------


def _check_options(
    image_size: int, epochs: int, batch_size: int, lr: float, loss: str, patience: int, seed: int
) -> None:
    if image_size < model_lib.MIN_SIZE:
        raise InputError(f"--image-size {image_size}: DenseNet121 needs at least {model_lib.MIN_SIZE} px")
    if epochs < 1:
        raise InputError(f"--epochs {epochs}: train for at least 1 epoch")
    if batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"--lr {lr}: the learning rate must be a positive number, e.g. 1e-4")
    if loss not in ("weighted", "plain"):
        raise InputError(f"--loss {loss}: unknown loss; use weighted or plain")
    if patience < 1:
        raise InputError(f"--patience {patience}: must be at least 1 epoch")
    if not 0 <= seed < 2**32:
        raise InputError(f"--seed {seed}: must be a whole number from 0 to 2**32 - 1")


def _check_run_folder(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder for the run")
    holds_run = any((out / name).exists() for name in (CONFIG, STATE, HISTORY, BEST, CHECKPOINTS))
    if holds_run and not resume:
        raise InputError(
            f"--out {out} already holds a training run; add --resume to continue it or choose another --out"
        )
    if resume and not (out / CONFIG).is_file():
        raise InputError(f"--out {out}: no run to resume (no {CONFIG}); drop --resume to start a new run")


def _start_or_resume(out: Path, config: dict[str, Any], resume: bool, log: Callable[[str], Any]) -> dict | None:
    """Write ``config.json`` for a new run; for ``resume``, check it matches and return the saved state (or None)."""
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(config, out / CONFIG)  # first, so a run killed from here on can be resumed
        (out / CHECKPOINTS).mkdir(exist_ok=True)
        return None

    saved = _read_json(out / CONFIG)
    for key, what in (("train_sha256", "training"), ("valid_sha256", "validation")):
        if saved.get(key) != config[key]:
            raise InputError(
                f"--resume: the {what} CSV differs from the one run {out} was started with (SHA-256); "
                "resume with the same label files, or start a new run with another --out"
            )
    changed = [
        f"{key} {saved.get(key)!r} -> {config[key]!r}" for key in RESUME_SETTINGS if saved.get(key) != config[key]
    ]
    if changed:
        raise InputError(
            f"--resume: settings differ from run {out} ({'; '.join(changed)}); "
            "pass the original values, or start a new run with another --out"
        )
    for key in ("epochs", "patience"):
        if saved.get(key) != config[key]:
            log(f"--resume: {key} {saved.get(key)} -> {config[key]}")
    state = _read_json(out / STATE) if (out / STATE).is_file() else None
    if state is not None and _finished(state, config["epochs"], config["patience"]):
        return state
    resumed = {"at": _now(), "after_epoch": state["epoch"] if state else 0}
    updated = {**saved, "epochs": config["epochs"], "patience": config["patience"]}
    updated["resumed"] = [*saved.get("resumed", []), resumed]
    (out / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    write_json_atomic(updated, out / CONFIG)
    _remove_leftovers(out, state["epoch"] if state else 0)
    if state is not None and state["best_epoch"] >= state["epoch"] - (KEEP_CHECKPOINTS - 1):
        # A crash between state.json and best.keras leaves the old best; its checkpoint is still kept.
        best = model_lib.load(out / CHECKPOINTS / f"epoch-{state['best_epoch']:03d}.keras")
        model_lib.save_for_inference(best, out / BEST)
    return state


def _commit_epoch(out: Path, net: keras.Model, state: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Save an epoch in the one order that a kill at any moment leaves resumable; return the new state.

    Checkpoint first, then the state that points to it, then what can be rebuilt from the two: best.keras
    and history.csv. Last, checkpoints the state no longer needs are deleted.
    """
    epoch = row["epoch"]
    checkpoint = Path(CHECKPOINTS) / f"epoch-{epoch:03d}.keras"
    model_lib.save(net, out / checkpoint)
    state = _next_state(state, row, checkpoint.as_posix(), int(net.optimizer.iterations))
    write_json_atomic(state, out / STATE)
    if state["best_epoch"] == epoch:
        model_lib.save_for_inference(net, out / BEST)
    _write_history(out, state)
    _remove_old_checkpoints(out, epoch)
    return state


def _load_for_resume(out: Path, state: dict[str, Any]) -> keras.Model:
    """The compiled model of the last complete epoch, with its optimizer state (checked against the state)."""
    path = out / state["checkpoint"]
    if not path.is_file():
        raise InputError(f"{path}: the checkpoint of epoch {state['epoch']} is missing; start a new run")
    try:
        net = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:150]
        raise InputError(f"{path}: cannot load ({type(exc).__name__}: {reason}); the checkpoint is damaged") from None
    iterations = int(net.optimizer.iterations)
    if iterations != state["optimizer_iterations"]:
        raise InputError(
            f"{path}: optimizer step {iterations}, but {STATE} says {state['optimizer_iterations']}; "
            "the run folder is inconsistent, start a new run"
        )
    return net


def _initial_state(lr: float, seed: int) -> dict[str, Any]:
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


def _next_state(state: dict[str, Any], row: dict[str, Any], checkpoint: str, iterations: int) -> dict[str, Any]:
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


def _finished(state: dict[str, Any], epochs: int, patience: int) -> bool:
    return state["epoch"] >= epochs or state["epochs_without_gain"] >= patience


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)


def _fill_cache(images: tf.data.Dataset) -> None:
    """Decode every image now, so a bad file fails before training with its own one-line message."""
    try:
        for _ in images.batch(256):
            pass
    except tf.errors.OpError as exc:
        # numpy_function reports the Python exception inside a long TensorFlow message; keep its line.
        lines = [line.strip() for line in str(exc).splitlines() if "InputError:" in line]
        if lines:
            raise InputError(lines[0].split("InputError:", 1)[1].strip()) from None
        raise


def _write_history(out: Path, state: dict[str, Any]) -> None:
    write_csv_atomic(history_frame(state), out / HISTORY)


def _remove_old_checkpoints(out: Path, last_epoch: int) -> None:
    """Keep the checkpoints of the last `KEEP_CHECKPOINTS` complete epochs; drop older ones and any later ones."""
    for path in (out / CHECKPOINTS).glob("epoch-*.keras"):
        epoch = int(path.stem.removeprefix("epoch-"))
        if epoch <= last_epoch - KEEP_CHECKPOINTS or epoch > last_epoch:
            path.unlink(missing_ok=True)


def _remove_leftovers(out: Path, last_epoch: int) -> None:
    """Temporary files of writes a crash interrupted, and checkpoints of an epoch that never completed."""
    for name in (CONFIG, STATE, HISTORY, BEST):
        for path in out.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
    for path in (out / CHECKPOINTS).glob(".epoch-*.keras"):
        path.unlink(missing_ok=True)
    _remove_old_checkpoints(out, last_epoch)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path) as file:
            return json.load(file)
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot be read ({exc}); the run folder is damaged, start a new run") from None


def _per_finding(values: np.ndarray) -> dict[str, float]:
    return {finding: float(value) for finding, value in zip(FINDINGS, values, strict=True)}


def _format_auc(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
