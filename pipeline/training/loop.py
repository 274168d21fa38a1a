"""Train the DenseNet121: the loop over epochs, on one device, all GPUs of a machine, or several machines.

One loop serves every `training.distribution` strategy: data from `data.input_pipeline` (an image folder or a
prepared folder, each worker reading its own shards), steps from `pipeline.training.steps` (a custom step under
``strategy.run``, since Keras's ``fit`` fails under MultiWorkerMirroredStrategy), and the run folder of
`pipeline.training.run_folder`. ``batch_size`` is the global batch, divided among the replicas.

Only the chief (worker 0) reads and writes the run folder: it loads weights (resume, ``init_from``,
ImageNet), validates after each epoch and decides what comes next; `pipeline.training.distribution` broadcasts its
weights and decisions, so the other workers need the data but never the run folder.

Randomness. ``keras.utils.set_random_seed(seed)`` fixes the initial weights, and each epoch's shuffle and
augmentation come from ``(seed, epoch)``, so a resumed run sees the same images in the same order as an
uninterrupted one.

This module stays whole (about 530 lines) because it is one protocol between workers: which worker reads,
writes, validates and broadcasts, and in which order around each epoch, is only checkable read together.
Everything with a life of its own lives elsewhere (input, run folder, strategies, the step, serving).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.core.errors import InputError, reason
from pipeline.core.files import sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.data import input_pipeline, label_files
from pipeline.evaluation import metrics
from pipeline.networks import densenet as model_lib
from pipeline.networks.losses import make_loss
from pipeline.training import distribution, run_folder, steps

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
    export: bool = True,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Train a DenseNet121 on ``train_data``, validating on ``valid_data`` after every epoch.

    Parameters
    ----------
    train_data, valid_data
        Label files (with ``images_dir``) or prepared folders (`pipeline.data.prepare`; ``images_dir`` unused).
    out_dir
        The run folder (`pipeline.training.run_folder`). It must not hold a run unless ``resume`` is true.
    image_size, weights
        Input side in pixels and initial weights (``"imagenet"``, ``"none"`` or a path), as `densenet.build`.
    init_from
        A ``.keras`` checkpoint of this project to start from (fine-tuning) instead of ``weights``; it must
        take ``image_size`` images and predict the 14 findings.
    epochs, batch_size, lr
        Number of epochs in all (a resumed run counts those already done), global batch size, initial Adam
        learning rate.
    loss
        ``"weighted"``: `pipeline.networks.losses.WeightedBinaryCrossentropy` with weights from the training labels;
        ``"plain"``: binary cross-entropy.
    patience
        Stop after this many epochs without a gain in validation mean AUC.
    resume
        Continue the run in ``out_dir`` from its last complete epoch, with the same data and settings.
    strategy
        A name of `pipeline.training.distribution.STRATEGIES` or a strategy; ``"multi-worker"`` reads ``TF_CONFIG``
        and must be made before any other TensorFlow op of the process.
    mixed_precision, jit_compile
        Compute in float16 with loss scaling (the head and the saved ``best.keras`` stay float32); compile
        the training step with XLA (one device).
    export
        At the end, export ``best.keras`` for serving and store the run's typicality statistics
        (`serving.add_serving_artifacts`), so the app and ``predict`` answer fast and guard their input.
    log
        Receives one line per event (a summary per epoch); a progress bar goes to stderr when it is a terminal.

    Returns
    -------
    pandas.DataFrame
        The history, one row per epoch, as written to ``history.csv`` (empty on workers other than the chief).
    """
    _check_options(image_size, epochs, batch_size, lr, patience, seed)
    if isinstance(strategy, str):
        strategy = distribution.make_strategy(strategy)  # first: multi-worker must precede every other op
    me = distribution.role(strategy)
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise InputError(f"`batch_size` {batch_size} does not divide among {replicas} replicas; use a multiple of it")
    if replicas % me.count:
        raise InputError(f"{replicas} replicas on {me.count} workers: give every machine the same number of GPUs")
    out = Path(out_dir)
    if me.is_chief and me.count == 1:
        run_folder.check_run_folder(out, resume)  # fail fast; with several workers, below, where they hear of it

    train_source = input_pipeline.open_source(train_data, images_dir)
    valid_source = input_pipeline.open_source(valid_data, images_dir)
    for source in (train_source, valid_source):
        input_pipeline.check_size(source, image_size)
    y_valid = label_files.label_matrix(valid_source.table).astype(np.float32)
    if not any(metrics.has_both_classes(column) for column in y_valid.T):
        raise InputError(
            f"{valid_source.name}: no finding has both positive and negative images, so validation AUC is "
            "undefined; use a larger validation set"
        )
    steps_per_epoch = input_pipeline.steps_per_epoch(train_source, batch_size, me.count)
    settings = {
        "train": os.fspath(train_data),
        "valid": os.fspath(valid_data),
        "images": None if images_dir is None else os.fspath(images_dir),
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weights": "none" if init_from is not None else os.fspath(weights),
        "init_from": None if init_from is None else {"path": os.fspath(init_from)},
        "loss": loss,
        "patience": patience,
        "seed": seed,
        "strategy": {"name": distribution.strategy_name(strategy), "replicas": replicas, "workers": me.count},
        "mixed_precision": mixed_precision,
        "jit_compile": jit_compile,
    }

    # The chief alone reads the run folder and loads weights; every worker decodes its share of an image
    # folder. Whatever fails, every worker hears of it (one all-reduce) and stops, instead of waiting forever
    # in the next collective for a worker that has gone.
    state, start_weights, failure = None, None, None
    try:
        # Images first: an unreadable one is refused before the run folder is written, so it never blocks a rerun.
        if me.is_chief:
            input_pipeline.fill_cache(valid_source, image_size)
        input_pipeline.fill_cache(train_source, image_size, me.index, me.count)
        if me.is_chief:
            state, start_weights = _chief_setup(out, settings, train_source, valid_source, resume, log)
            if state is not None and _finished(state, epochs, patience):
                _repair_finished(out, state, export, train_source, valid_source, image_size, log)
    except InputError as exc:
        failure = exc
    _stop_together(strategy, me, failure)
    # Every worker learns where the chief stands: the epoch to continue after, whether that is the end, the
    # learning rate to continue with.
    start = [state["epoch"], float(_finished(state, epochs, patience)), state["lr"]] if state else [0, 0.0, lr]
    start = distribution.broadcast_numbers(strategy, start) if me.count > 1 else start
    if start[1]:
        return run_folder.history_frame(state) if me.is_chief else pd.DataFrame(columns=run_folder.HISTORY_COLUMNS)

    keras.utils.set_random_seed(seed)
    distribution.set_mixed_precision(mixed_precision)
    try:
        net, optimizer, loss_fn = _build(strategy, image_size, lr, loss, mixed_precision, train_source, start_weights)
        if me.count > 1:
            distribution.broadcast_from_chief(strategy, [*net.weights, *optimizer.variables])
        if me.is_chief and state is None:
            state = run_folder.initial_state(lr, seed)
            log(
                f"new run in {out}: {len(train_source):,} training and {len(valid_source):,} validation images, "
                f"{replicas} replica{'s' if replicas > 1 else ''} on {me.count} worker{'s' if me.count > 1 else ''}"
            )
        step = steps.make_train_step(strategy, net, loss_fn, optimizer, batch_size, jit_compile=jit_compile)
        predict = _predictor(net)
        epoch, lr_now = int(start[0]), start[2]
        while True:
            epoch += 1
            optimizer.learning_rate.assign(lr_now)
            started = time.monotonic()
            bar = ProgressBar(f"epoch {epoch}/{epochs}", steps_per_epoch, unit="steps") if me.is_chief else None
            on_step = None
            if bar is not None and bar.enabled:
                on_step = lambda i, loss, bar=bar: bar.update(i + 1, f"loss {loss:.3f}")  # noqa: E731
            seed_of_epoch = run_folder.epoch_seed(seed, epoch)
            train_loss = steps.train_epoch(
                strategy,
                step,
                _input_function(train_source, image_size, batch_size, steps_per_epoch, seed_of_epoch),
                steps_per_epoch,
                on_step=on_step,
            )
            if bar is not None:
                bar.close()
            if replicas > 1:  # BatchNormalization's moving statistics are per replica in a custom loop
                distribution.average_over_replicas(strategy, net.non_trainable_weights)

            failure = None
            if me.is_chief:
                try:
                    state = _end_epoch(out, net, state, predict, valid_source, image_size, loss_fn, epoch, lr_now,
                                       train_loss, started)
                    _log_epoch(log, epochs, state["history"][-1], state, lr_now)
                except InputError as exc:
                    failure = exc
            _stop_together(strategy, me, failure)
            decision = [state["lr"], float(_finished(state, epochs, patience))] if me.is_chief else [0.0, 0.0]
            decision = distribution.broadcast_numbers(strategy, decision) if me.count > 1 else decision
            lr_now = decision[0]
            if decision[1]:
                break

        failure = None
        if me.is_chief:
            if state["epoch"] < epochs:
                log(f"early stop: no val_mean_auc gain in {state['epochs_without_gain']} epochs (patience {patience})")
            log(
                f"done: {state['epoch']} epochs, best val_mean_auc {run_folder.format_auc(state['best_auc'])} "
                f"at epoch {state['best_epoch']} -> {out / run_folder.BEST}"
            )
            try:
                if export:
                    _export(out, train_source, valid_source, image_size, log)
            except InputError as exc:
                failure = exc
        _stop_together(strategy, me, failure)  # the others wait for the export instead of leaving first
    finally:
        distribution.set_mixed_precision(False)  # the global policy must not leak into what runs next
    return run_folder.history_frame(state) if me.is_chief else pd.DataFrame(columns=run_folder.HISTORY_COLUMNS)


# --- setup -----------------------------------------------------------------------------------------------------


def _chief_setup(
    out: Path,
    settings: dict[str, Any],
    train_source: input_pipeline.Source,
    valid_source: input_pipeline.Source,
    resume: bool,
    log: Callable[[str], Any],
) -> tuple[dict[str, Any] | None, tuple[list, list | None] | None]:
    """Start or resume the run folder; the state and the weights (and optimizer state) training starts from.

    Weights: the last complete epoch's checkpoint for a resumed run, the ``init_from`` checkpoint for
    fine-tuning, the ImageNet (or given) backbone for a new run; None means a random start.
    """
    image_size, init_from = settings["image_size"], settings["init_from"]
    if init_from is not None:
        init_model = _init_checkpoint(init_from["path"], image_size)
        init_from["sha256"] = sha256_of(init_from["path"])
    config = run_folder.run_config(settings, train_source, valid_source)
    run_folder.check_run_folder(out, resume)
    state = run_folder.read_for_resume(out, config, log) if resume else None
    if not resume:
        run_folder.start(out, config)
    if state is not None and not _finished(state, settings["epochs"], settings["patience"]):
        saved = _load_checkpoint(out, state)
        log(
            f"resuming {out} after epoch {state['epoch']} (optimizer step {state['optimizer_iterations']}, "
            f"lr {state['lr']:.1e}, best val_mean_auc {run_folder.format_auc(state['best_auc'])})"
        )
        if run_folder.best_needs_rewrite(state):
            _save_best(model_lib.load(run_folder.checkpoint_path(out, state["best_epoch"])), out)
        run_folder.write_history(out, state)  # brings a history.csv left behind by a crash back in line
        run_folder.write_tensorboard(out, state)
        return state, (saved.get_weights(), [v.numpy() for v in saved.optimizer.variables])
    if state is not None:
        return state, None
    if init_from is not None:
        log(f"fine-tuning from {init_from['path']}")
        return None, (init_model.get_weights(), None)
    if settings["weights"] != "none":  # ImageNet (downloaded once) or a weights file, into the backbone
        return None, (model_lib.build(image_size, settings["weights"]).get_weights(), None)
    return None, None


def _repair_finished(
    out: Path,
    state: dict[str, Any],
    export: bool,
    train_source: input_pipeline.Source,
    valid_source: input_pipeline.Source,
    image_size: int,
    log: Callable[[str], Any],
) -> None:
    """A complete run resumed: redo what a kill after its last checkpoint may have left undone."""
    if run_folder.best_needs_rewrite(state):
        _save_best(model_lib.load(run_folder.checkpoint_path(out, state["best_epoch"])), out)
    run_folder.write_history(out, state)
    run_folder.write_tensorboard(out, state)
    done = f"all {state['epoch']} epochs" if state["epochs_without_gain"] == 0 else f"{state['epoch']} epochs"
    from pipeline.inference import serving

    if export and serving.exported(out / run_folder.BEST) is None:
        log(f"{out}: training already complete ({done}); the serving export is missing or stale, making it")
        _export(out, train_source, valid_source, image_size, log)
    else:
        log(f"{out}: already complete ({done}), nothing to resume")


def _build(
    strategy: tf.distribute.Strategy,
    image_size: int,
    lr: float,
    loss: str,
    mixed_precision: bool,
    train_source: input_pipeline.Source,
    start_weights: tuple[list, list | None] | None,
) -> tuple[keras.Model, Any, keras.losses.Loss]:
    """The model, its optimizer and the loss under ``strategy``, holding ``start_weights`` (chief) if any."""
    loss_fn = make_loss(loss, train_source.table)
    with strategy.scope():
        net = model_lib.build(image_size, "none")
        optimizer = keras.optimizers.Adam(learning_rate=lr)
        if mixed_precision:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)
        net.compile(optimizer=optimizer, loss=loss_fn)  # so that checkpoints carry the optimizer state
    if start_weights is not None:
        weights, optimizer_values = start_weights
        net.set_weights(weights)
        for variable, value in zip(optimizer.variables, optimizer_values or [], strict=bool(optimizer_values)):
            variable.assign(value)
    return net, optimizer, loss_fn


def _stop_together(strategy: tf.distribute.Strategy, me: distribution.WorkerRole, failure: InputError | None) -> None:
    """Raise ``failure`` here, and on every other worker a note that one of them failed (one all-reduce)."""
    if me.count > 1 and distribution.any_worker(strategy, failure is not None) and failure is None:
        raise InputError("another worker stopped with an error (see its message); fix it and restart every worker")
    if failure is not None:
        raise failure


# --- one epoch -------------------------------------------------------------------------------------------------


def _input_function(
    source: input_pipeline.Source, image_size: int, batch_size: int, steps_per_epoch: int, seed: int
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """Per input pipeline (one per worker): its shards, in per-replica batches, ``steps`` global steps' worth."""

    def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(batch_size)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return input_pipeline.training_batches(
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
    valid_source: input_pipeline.Source,
    image_size: int,
    loss_fn: keras.losses.Loss,
    epoch: int,
) -> tuple[float, float, list[float | None]]:
    """Validation loss, mean AUC and per-finding AUCs of the model (chief only)."""
    probabilities, labels = [], []
    for x, y in input_pipeline.evaluation_batches(valid_source, image_size, VALID_BATCH):
        probabilities.append(predict(x).numpy())
        labels.append(y.numpy())
    probabilities, y_valid = np.concatenate(probabilities), np.concatenate(labels)
    if not np.isfinite(probabilities).all():
        raise InputError(f"training diverged at epoch {epoch} (non-finite predictions); use a lower `lr`")
    val_loss = float(keras.ops.convert_to_numpy(loss_fn(y_valid, probabilities)))
    return (val_loss, *validation_auc(y_valid, probabilities))


def _end_epoch(
    out: Path,
    net: keras.Model,
    state: dict[str, Any],
    predict: Callable[[tf.Tensor], tf.Tensor],
    valid_source: input_pipeline.Source,
    image_size: int,
    loss_fn: keras.losses.Loss,
    epoch: int,
    lr: float,
    train_loss: float,
    started: float,
) -> dict[str, Any]:
    """Validate the epoch's model and commit the epoch to the run folder (chief only); the new state."""
    if not np.isfinite(train_loss):
        raise InputError(f"training diverged at epoch {epoch} (training loss {train_loss}); use a lower `lr`")
    val_loss, mean_auc, finding_aucs = _validate(predict, valid_source, image_size, loss_fn, epoch)
    row = {
        "epoch": epoch,
        "loss": train_loss,
        "val_loss": val_loss,
        "val_mean_auc": mean_auc,
        "lr": lr,
        "seconds": round(time.monotonic() - started, 2),
        **{f"val_auc_{finding}": auc for finding, auc in zip(FINDINGS, finding_aucs, strict=True)},
    }
    return _commit_epoch(out, net, state, row)


def _commit_epoch(out: Path, net: keras.Model, state: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """Save an epoch in the one order that a kill at any moment leaves resumable; return the new state.

    Checkpoint first, then the state that points to it, then what can be rebuilt from the two: best.keras,
    history.csv and the TensorBoard logs. Last, checkpoints the state no longer needs are deleted.
    """
    epoch = row["epoch"]
    checkpoint = run_folder.checkpoint_path(out, epoch)
    model_lib.save(net, checkpoint)
    iterations = int(tf.convert_to_tensor(net.optimizer.iterations.value))  # a MirroredVariable under tf.distribute
    state = run_folder.next_state(state, row, checkpoint.relative_to(out).as_posix(), iterations)
    run_folder.write_state(out, state)
    if state["best_epoch"] == epoch:
        _save_best(net, out)
    run_folder.write_history(out, state)
    run_folder.write_tensorboard(out, state)
    run_folder.remove_old_checkpoints(out, epoch)
    return state


def _export(
    out: Path, train_source: input_pipeline.Source, valid_source: input_pipeline.Source, image_size: int, log: Callable
) -> None:
    """The inference export of ``best.keras`` and the typicality statistics, from (a sample of) the run's images."""
    from pipeline.inference import serving

    log("exporting best.keras for serving and fitting the out-of-distribution guard ...")
    images = [input_pipeline.sample(source, serving.MAX_STATS_IMAGES, image_size)
              for source in (train_source, valid_source)]
    summary = serving.add_serving_artifacts(out, model_lib.load(out / run_folder.BEST), *images)
    log(f"served by {Path(summary['export']).name}; typicality threshold {summary['threshold']:.3g} from "
        f"{summary['train_images']:,} training and {summary['valid_images']:,} validation images")


def _save_best(net: keras.Model, out: Path) -> None:
    """``best.keras``: float32 whatever the training precision, without optimizer state."""
    mixed = net.dtype_policy.name != "float32"
    model_lib.save_for_inference(distribution.float32_copy(net) if mixed else net, out / run_folder.BEST)


def _log_epoch(log: Callable[[str], Any], epochs: int, row: dict[str, Any], state: dict[str, Any], lr: float) -> None:
    log(
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.3f}  val_loss {row['val_loss']:.3f}  "
        f"val_mean_auc {row['val_mean_auc']:.3f}  lr {lr:.1e}  best {state['best_auc']:.3f}  ({row['seconds']:.0f} s)"
    )
    if state["lr"] < lr:
        log(f"no val_mean_auc gain in {run_folder.LR_PLATEAU_EPOCHS} epochs: learning rate {state['lr']:.1e}")


def validation_auc(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean ROC AUC over the findings where it is defined, and each finding's AUC (None without both classes)."""
    aucs = [metrics.roc_auc(y_true[:, i], probabilities[:, i]) for i in range(y_true.shape[1])]
    defined = [auc for auc in aucs if auc is not None]
    return (float(np.mean(defined)) if defined else math.nan), aucs


# --- checkpoints, config, TensorBoard --------------------------------------------------------------------------


def _load_checkpoint(out: Path, state: dict[str, Any]) -> keras.Model:
    """The last complete epoch's checkpoint, compiled with its optimizer state (checked against the state)."""
    path = out / state["checkpoint"]
    if not path.is_file():
        raise InputError(f"{path}: the checkpoint of epoch {state['epoch']} is missing; start a new run")
    try:
        saved = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:
        why = reason(exc, limit=150, typed=True)
        raise InputError(f"{path}: cannot load ({why}); the checkpoint is damaged") from None
    iterations = int(saved.optimizer.iterations)
    if iterations != state["optimizer_iterations"]:
        raise InputError(
            f"{path}: optimizer step {iterations}, but {run_folder.STATE} says {state['optimizer_iterations']}; "
            "the run folder is inconsistent, start a new run"
        )
    return saved


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
    return run_folder.finished(state, epochs, patience)
