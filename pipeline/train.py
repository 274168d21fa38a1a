"""Train the DenseNet121: the loop over epochs, on one device, all GPUs of a machine, or several machines.

One loop serves every `pipeline.distribute` strategy: data from `pipeline.datasets` (an image folder or a
prepared folder, each worker reading its own shards), steps from `pipeline.steps` (a custom step under
``strategy.run``, since Keras's ``fit`` fails under MultiWorkerMirroredStrategy), and the run folder of
`pipeline.runstate`. ``batch_size`` is the global batch, divided among the replicas.

Only the chief (worker 0) reads and writes the run folder: it loads weights (resume, ``init_from``,
ImageNet), validates after each epoch and decides what comes next; `pipeline.distribute` broadcasts its
weights and decisions, so the other workers need the data but never the run folder.

Randomness. ``keras.utils.set_random_seed(seed)`` fixes the initial weights, and each epoch's shuffle and
augmentation come from ``(seed, epoch)``, so a resumed run sees the same images in the same order as an
uninterrupted one.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import data, datasets, distribute, metrics, runstate, steps
from pipeline import model as model_lib
from pipeline.errors import InputError, reason
from pipeline.files import sha256_of
from pipeline.findings import FINDINGS
from pipeline.losses import class_weights, make_loss
from pipeline.progress import ProgressBar

VALID_BATCH = 64


def train(
    train_data: str | os.PathLike[str],
    valid_data: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    image_size: int = 320,
    epochs: int = 10,
    batch_size: int = 16,
    lr: float = 1e-4,
    weights: str | os.PathLike[str] = "imagenet",
    init_from: str | os.PathLike[str] | None = None,
    loss: str = "weighted",
    patience: int = 5,
    seed: int = 0,
    resume: bool = False,
    strategy: str | tf.distribute.Strategy = "auto",
    mixed_precision: bool = False,
    jit_compile: bool = False,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Train a DenseNet121 on ``train_data``, validating on ``valid_data`` after every epoch.

    Parameters
    ----------
    train_data, valid_data
        Label files (with ``images_dir``) or prepared folders (`pipeline.prepare`; ``images_dir`` unused).
    out_dir
        The run folder (`pipeline.runstate`). It must not hold a run unless ``resume`` is true.
    image_size, weights
        Input side in pixels and initial weights (``"imagenet"``, ``"none"`` or a path), as `pipeline.model.build`.
    init_from
        A ``.keras`` checkpoint of this project to start from (fine-tuning) instead of ``weights``; it must
        take ``image_size`` images and predict the 14 findings.
    epochs, batch_size, lr
        Number of epochs in all (a resumed run counts those already done), global batch size, initial Adam
        learning rate.
    loss
        ``"weighted"``: `pipeline.losses.WeightedBinaryCrossentropy` with weights from the training labels;
        ``"plain"``: binary cross-entropy.
    patience
        Stop after this many epochs without a gain in validation mean AUC.
    resume
        Continue the run in ``out_dir`` from its last complete epoch, with the same data and settings.
    strategy
        A name of `pipeline.distribute.STRATEGIES` or a strategy; ``"multi-worker"`` reads ``TF_CONFIG``
        and must be made before any other TensorFlow op of the process.
    mixed_precision, jit_compile
        Compute in float16 with loss scaling (the head and the saved ``best.keras`` stay float32); compile
        the training step with XLA (one device).
    log
        Receives one line per event (a summary per epoch); a progress bar goes to stderr when it is a terminal.

    Returns
    -------
    pandas.DataFrame
        The history, one row per epoch, as written to ``history.csv`` (on every worker).
    """
    _check_options(image_size, epochs, batch_size, lr, patience, seed)
    if isinstance(strategy, str):
        strategy = distribute.make_strategy(strategy)  # first: multi-worker must precede every other op
    me = distribute.role(strategy)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(f"`batch_size` {batch_size} does not divide among {replicas} replicas; use a multiple of it")
    out = Path(out_dir)
    if me.is_chief:
        runstate.check_run_folder(out, resume)

    train_source = datasets.open_source(train_data, images_dir)
    valid_source = datasets.open_source(valid_data, images_dir)
    for source in (train_source, valid_source):
        datasets.check_size(source, image_size)
    y_valid = data.label_matrix(valid_source.table).astype(np.float32)
    if not any(metrics.has_both_classes(column) for column in y_valid.T):
        raise InputError(
            f"{valid_source.name}: no finding has both positive and negative images, so validation AUC is "
            "undefined; use a larger validation set"
        )
    steps_per_epoch = datasets.steps_per_epoch(train_source, batch_size, me.count)
    if init_from is not None:
        init_model = _init_checkpoint(init_from, image_size)
    settings = {
        "train": os.fspath(train_data),
        "valid": os.fspath(valid_data),
        "images": None if images_dir is None else os.fspath(images_dir),
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weights": "none" if init_from is not None else os.fspath(weights),
        "init_from": None if init_from is None else {"path": os.fspath(init_from), "sha256": sha256_of(init_from)},
        "loss": loss,
        "patience": patience,
        "seed": seed,
        "strategy": {"name": _strategy_name(strategy), "replicas": replicas, "workers": me.count},
        "mixed_precision": mixed_precision,
        "jit_compile": jit_compile,
    }
    config = run_config(settings, train_source, valid_source)

    state = None
    if me.is_chief:
        if resume:
            state = runstate.read_for_resume(out, config, log)
        else:
            runstate.start(out, config)
    # Every worker learns where the chief stands: the epoch to continue after and whether that is the end.
    start = [state["epoch"] if state else 0, 1.0 if state and _finished(state, epochs, patience) else 0.0]
    start = distribute.broadcast_numbers(strategy, start) if me.count > 1 else start
    if start[1]:
        if me.is_chief:
            runstate.write_history(out, state)
            done = f"all {epochs} epochs" if state["epoch"] >= epochs else f"early stop after {state['epoch']} epochs"
            log(f"{out}: already complete ({done}), nothing to resume")
            return runstate.history_frame(state)
        return pd.DataFrame(columns=runstate.HISTORY_COLUMNS)

    keras.utils.set_random_seed(seed)
    distribute.set_mixed_precision(mixed_precision)
    loss_fn = make_loss(loss, train_source.table)
    with strategy.scope():
        net = model_lib.build(image_size, weights if me.is_chief and state is None and init_from is None else "none")
        optimizer = keras.optimizers.Adam(learning_rate=lr)
        if mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)
        net.compile(optimizer=optimizer, loss=loss_fn)  # so that checkpoints carry the optimizer state
    if me.is_chief and state is not None:
        _load_checkpoint(out, state, net, optimizer)
        log(
            f"resuming {out} after epoch {state['epoch']} (optimizer step {state['optimizer_iterations']}, "
            f"lr {state['lr']:.1e}, best val_mean_auc {runstate.format_auc(state['best_auc'])})"
        )
    elif me.is_chief and init_from is not None:
        net.set_weights(init_model.get_weights())
        log(f"fine-tuning from {init_from}")
    if me.count > 1:
        distribute.broadcast_from_chief(strategy, [*net.weights, *optimizer.variables])
    if me.is_chief:
        if state is None:
            state = runstate.initial_state(lr, seed)
            log(
                f"new run in {out}: {len(train_source):,} training and {len(valid_source):,} validation images, "
                f"{replicas} replica{'s' if replicas > 1 else ''} on {me.count} worker{'s' if me.count > 1 else ''}"
            )
        elif runstate.best_needs_rewrite(state):
            _save_best(model_lib.load(runstate.checkpoint_path(out, state["best_epoch"])), out)
        runstate.write_history(out, state)  # brings a history.csv left behind by a crash back in line
        _write_tensorboard(out, state)
        datasets.fill_cache(valid_source, image_size)
    datasets.fill_cache(train_source, image_size, me.index, me.count)

    step = steps.make_train_step(strategy, net, loss_fn, optimizer, batch_size, jit_compile=jit_compile)
    predict = _predictor(net)
    epoch, lr_now = int(start[0]), state["lr"] if state else lr
    while True:
        epoch += 1
        optimizer.learning_rate.assign(lr_now)
        started = time.monotonic()
        bar = ProgressBar(f"epoch {epoch}/{epochs}", steps_per_epoch, unit="steps") if me.is_chief else None
        on_step = None
        if bar is not None and bar.enabled:
            on_step = lambda i, loss, bar=bar: bar.update(i + 1, f"loss {loss:.3f}")  # noqa: E731
        train_loss = steps.train_epoch(
            strategy,
            step,
            _input_function(train_source, image_size, batch_size, steps_per_epoch, runstate.epoch_seed(seed, epoch)),
            steps_per_epoch,
            on_step=on_step,
        )
        if bar is not None:
            bar.close()
        if replicas > 1:  # BatchNormalization's moving statistics are per replica in a custom loop
            distribute.average_over_replicas(strategy, net.non_trainable_weights)

        decision = [0.0, 0.0]
        if me.is_chief:
            val_loss, mean_auc, finding_aucs = _validate(predict, valid_source, image_size, loss_fn, epoch)
            row = {
                "epoch": epoch,
                "loss": train_loss,
                "val_loss": val_loss,
                "val_mean_auc": mean_auc,
                "lr": lr_now,
                "seconds": round(time.monotonic() - started, 2),
                **{f"val_auc_{finding}": auc for finding, auc in zip(FINDINGS, finding_aucs, strict=True)},
            }
            state = _commit_epoch(out, net, state, row)
            _log_epoch(log, epochs, row, state, lr_now)
            decision = [state["lr"], 1.0 if _finished(state, epochs, patience) else 0.0]
        if me.count > 1:
            decision = distribute.broadcast_numbers(strategy, decision)
        lr_now = decision[0]
        if decision[1]:
            break

    if not me.is_chief:
        return pd.DataFrame(columns=runstate.HISTORY_COLUMNS)
    if state["epoch"] < epochs:
        log(f"early stop: no val_mean_auc gain in {state['epochs_without_gain']} epochs (patience {patience})")
    log(
        f"done: {state['epoch']} epochs, best val_mean_auc {runstate.format_auc(state['best_auc'])} "
        f"at epoch {state['best_epoch']} -> {out / runstate.BEST}"
    )
    return runstate.history_frame(state)


# --- one epoch -------------------------------------------------------------------------------------------------


def _input_function(
    source: datasets.Source, image_size: int, batch_size: int, steps_per_epoch: int, seed: int
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """Per input pipeline (one per worker): its shards, in per-replica batches, ``steps`` global steps' worth."""

    def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return datasets.training_batches(
            source,
            image_size,
            per_replica,
            steps_per_epoch * local_replicas,
            seed,
            worker=context.input_pipeline_id,
            workers=context.num_input_pipelines,
        )

    return dataset


def _predictor(net: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    """The model in inference mode as one traced function (direct calls: no collectives, chief alone)."""
    spec = tf.TensorSpec((None, *net.input_shape[1:]), tf.float32)
    return tf.function(lambda x: tf.cast(net(x, training=False), tf.float32), input_signature=[spec])


def _validate(
    predict: Callable[[tf.Tensor], tf.Tensor],
    valid_source: datasets.Source,
    image_size: int,
    loss_fn: keras.losses.Loss,
    epoch: int,
) -> tuple[float, float, list[float | None]]:
    """Validation loss, mean AUC and per-finding AUCs of the model (chief only)."""
    probabilities, labels = [], []
    for x, y in datasets.evaluation_batches(valid_source, image_size, VALID_BATCH):
        probabilities.append(predict(x).numpy())
        labels.append(y.numpy())
    probabilities, y_valid = np.concatenate(probabilities), np.concatenate(labels)
    if not np.isfinite(probabilities).all():
        raise InputError(f"training diverged at epoch {epoch} (non-finite predictions); use a lower `lr`")
    val_loss = float(keras.ops.convert_to_numpy(loss_fn(y_valid, probabilities)))
    return (val_loss, *validation_auc(y_valid, probabilities))


def _commit_epoch(out: Path, net: keras.Model, state: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Save an epoch in the one order that a kill at any moment leaves resumable; return the new state.

    Checkpoint first, then the state that points to it, then what can be rebuilt from the two: best.keras,
    history.csv and the TensorBoard logs. Last, checkpoints the state no longer needs are deleted.
    """
    epoch = row["epoch"]
    checkpoint = runstate.checkpoint_path(out, epoch)
    model_lib.save(net, checkpoint)
    state = runstate.next_state(state, row, checkpoint.relative_to(out).as_posix(), _step_count(net.optimizer))
    runstate.write_state(out, state)
    if state["best_epoch"] == epoch:
        _save_best(net, out)
    runstate.write_history(out, state)
    _write_tensorboard(out, state)
    runstate.remove_old_checkpoints(out, epoch)
    return state


def _save_best(net: keras.Model, out: Path) -> None:
    """``best.keras``: float32 whatever the training precision, without optimizer state."""
    mixed = net.dtype_policy.name != "float32"
    model_lib.save_for_inference(distribute.float32_copy(net) if mixed else net, out / runstate.BEST)


def _log_epoch(log: Callable[[str], Any], epochs: int, row: dict[str, Any], state: dict[str, Any], lr: float) -> None:
    log(
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.3f}  val_loss {row['val_loss']:.3f}  "
        f"val_mean_auc {row['val_mean_auc']:.3f}  lr {lr:.1e}  best {state['best_auc']:.3f}  ({row['seconds']:.0f} s)"
    )
    if state["lr"] < lr:
        log(f"no val_mean_auc gain in {runstate.LR_PLATEAU_EPOCHS} epochs: learning rate {state['lr']:.1e}")


def validation_auc(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean ROC AUC over the findings where it is defined, and each finding's AUC (None without both classes)."""
    aucs = [metrics.roc_auc(y_true[:, i], probabilities[:, i]) for i in range(y_true.shape[1])]
    defined = [auc for auc in aucs if auc is not None]
    return (float(np.mean(defined)) if defined else math.nan), aucs


# --- checkpoints, config, TensorBoard --------------------------------------------------------------------------


def _load_checkpoint(out: Path, state: dict[str, Any], net: keras.Model, optimizer: Any) -> None:
    """Copy the last complete epoch's weights and optimizer state into ``net`` and ``optimizer``."""
    path = out / state["checkpoint"]
    if not path.is_file():
        raise InputError(f"{path}: the checkpoint of epoch {state['epoch']} is missing; start a new run")
    try:
        saved = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:
        why = reason(exc, limit=150, typed=True)
        raise InputError(f"{path}: cannot load ({why}); the checkpoint is damaged") from None
    iterations = _step_count(saved.optimizer)
    if iterations != state["optimizer_iterations"]:
        raise InputError(
            f"{path}: optimizer step {iterations}, but {runstate.STATE} says {state['optimizer_iterations']}; "
            "the run folder is inconsistent, start a new run"
        )
    net.set_weights(saved.get_weights())
    for target, value in zip(optimizer.variables, saved.optimizer.variables, strict=True):
        target.assign(value)


def _strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public class name: tf.distribute.MultiWorkerMirroredStrategy's type is CollectiveAllReduceStrategy."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def _step_count(optimizer: Any) -> int:
    """The optimizer's step; ``int()`` of a variable made under a strategy (a MirroredVariable) fails."""
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def _init_checkpoint(path: str | os.PathLike[str], image_size: int) -> keras.Model:
    """The checkpoint to fine-tune from, checked against the image size and the 14 findings."""
    model = model_lib.load(path)
    if model_lib.input_size(model) != image_size:
        raise InputError(
            f"{path}: takes {model_lib.input_size(model)} px images, not `image_size` {image_size}; "
            f"train at {model_lib.input_size(model)} px or start from another checkpoint"
        )
    names = model_lib.finding_names(model)
    if names != list(FINDINGS):
        raise InputError(
            f"{path}: predicts {', '.join(names[:3])} ..., not the 14 NIH findings in order; "
            "start from a checkpoint made by `train`"
        )
    return model


def run_config(settings: dict[str, Any], train_source: datasets.Source, valid_source: datasets.Source) -> dict:
    """Everything ``config.json`` records: the settings plus data hashes, sizes, class frequencies, versions."""
    train_table, valid_table = train_source.table, valid_source.table
    freq_pos, _ = data.compute_class_freqs(train_table)
    valid_freq_pos, _ = data.compute_class_freqs(valid_table)
    loss_weights = None
    if settings["loss"] == "weighted":
        pos_weights, neg_weights = class_weights(train_table)
        loss_weights = {"pos": _per_finding(pos_weights), "neg": _per_finding(neg_weights)}
    return {
        **settings,
        "optimizer": "adam",
        "lr_schedule": {"reduce_on_plateau": {"factor": runstate.LR_FACTOR, "epochs": runstate.LR_PLATEAU_EPOCHS}},
        "augmentation": {
            "rotation_degrees": datasets.ROTATION_DEGREES,
            "shift": datasets.SHIFT,
            "zoom": datasets.ZOOM,
            "contrast": datasets.CONTRAST,
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
        "created": runstate.now(),
    }


def _write_tensorboard(out: Path, state: dict[str, Any]) -> None:
    """Log the history's epochs that TensorBoard has not seen yet (one scalar series per history column)."""
    folder = out / runstate.TENSORBOARD
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
    last = 0
    for path in folder.glob("events.out.tfevents.*"):
        try:
            for record in tf.data.TFRecordDataset(os.fspath(path)):
                last = max(last, int(tf.compat.v1.Event.FromString(record.numpy()).step))
        except tf.errors.DataLossError:  # a file a kill cut short: what it holds up to there still counts
            continue
    return last


def _check_options(image_size: int, epochs: int, batch_size: int, lr: float, patience: int, seed: int) -> None:
    if image_size < model_lib.MIN_SIZE:
        raise InputError(f"`image_size` {image_size}: DenseNet121 needs at least {model_lib.MIN_SIZE} px")
    if epochs < 1:
        raise InputError(f"`epochs` {epochs}: train for at least 1 epoch")
    if batch_size < 1:
        raise InputError(f"`batch_size` {batch_size}: must be at least 1")
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"`lr` {lr}: the learning rate must be a positive number, e.g. 1e-4")
    if patience < 1:
        raise InputError(f"`patience` {patience}: must be at least 1 epoch")
    if not 0 <= seed < 2**32:
        raise InputError(f"`seed` {seed}: must be a whole number from 0 to 2**32 - 1")


def _finished(state: dict[str, Any], epochs: int, patience: int) -> bool:
    return runstate.finished(state, epochs, patience)


def _per_finding(values: np.ndarray) -> dict[str, float]:
    return {finding: float(value) for finding, value in zip(FINDINGS, values, strict=True)}
