"""Train the DenseNet121: the loop over epochs, on one device, all devices of a machine, or several machines.

One loop serves both Keras backends and every distribution: the machinery of one epoch, the broadcasts and
the model's construction come from a `pipeline.training.engine.Engine` (TensorFlow: a custom step under
`tf.distribute`; JAX: Keras's ``train_on_batch`` under `keras.distribution`), the data from
`pipeline.data.input_pipeline` (each worker reading its own shards), and the run folder from
`pipeline.training.run_folder`. ``batch_size`` is the global batch, divided among the replicas.

Only the chief (worker 0) reads and writes the run folder: it loads weights (resume, ``init_from``,
ImageNet), validates after each epoch and decides what comes next; the engine broadcasts its weights and
decisions, so the other workers need the data but never the run folder.

Randomness. ``keras.utils.set_random_seed(seed)`` fixes the initial weights, and each epoch's shuffle and
augmentation come from ``(seed, epoch)``, so a resumed run sees the same images in the same order as an
uninterrupted one.

This module stays whole (about 530 lines) because it is one protocol between workers: which worker reads,
writes, validates and broadcasts, and in which order around each epoch, is only checkable read together.
Everything with a life of its own lives elsewhere (input, run folder, engines, the step, serving).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, reason
from pipeline.core.files import sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.data import input_pipeline, label_files
from pipeline.evaluation import metrics
from pipeline.networks import densenet as model_lib
from pipeline.networks.losses import make_loss
from pipeline.training import precision, run_folder
from pipeline.training.engine import Engine, make_engine
from pipeline.training.run_folder import RunState, TrainSettings

VALID_BATCH = 64
Start = tuple[list[np.ndarray], list[np.ndarray] | None]  # weights and optimizer values training starts from


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
    strategy: Any = "auto",
    mixed_precision: bool = False,
    jit_compile: bool = False,
    network: str = "densenet121",
    export: bool = True,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Train a DenseNet121 on ``train_data``, validating on ``valid_data`` after every epoch.

    The settings become one `pipeline.training.run_folder.TrainSettings`; `run` does the work.

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
        ``"weighted"``: `pipeline.networks.losses.WeightedBinaryCrossentropy` with weights from the training
        labels; ``"plain"``: binary cross-entropy.
    patience
        Stop after this many epochs without a gain in validation mean AUC.
    resume
        Continue the run in ``out_dir`` from its last complete epoch, with the same data and settings.
    strategy
        A name of `pipeline.training.engine.STRATEGIES` (or, on TensorFlow, a tf.distribute strategy);
        ``"multi-worker"`` reads ``TF_CONFIG`` (TensorFlow) or the ``JAX_*`` variables of
        `pipeline.training.jax_engine.ENV`, and must be made before any other work of the process.
    mixed_precision, jit_compile
        Compute in half precision (float16 with loss scaling on TensorFlow, bfloat16 on JAX; the head and the
        saved ``best.keras`` stay float32); compile the TensorFlow step with XLA (one device; JAX always does).
    network
        ``"densenet121"``, or ``"tiny"`` for smoke tests (`pipeline.networks.densenet.build`).
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
    settings = TrainSettings(
        train=os.fspath(train_data),
        valid=os.fspath(valid_data),
        images=None if images_dir is None else os.fspath(images_dir),
        image_size=image_size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weights=os.fspath(weights),
        init_from=None if init_from is None else os.fspath(init_from),
        loss=loss,
        patience=patience,
        seed=seed,
        mixed_precision=mixed_precision,
        jit_compile=jit_compile,
        network=network,
    )
    return run(settings, Path(out_dir), resume=resume, strategy=strategy, export=export, log=log)


def run(
    settings: TrainSettings,
    out: Path,
    *,
    resume: bool = False,
    strategy: Any = "auto",
    export: bool = True,
    log: Callable[[str], Any] = print,
) -> pd.DataFrame:
    """Train as ``settings`` say into the run folder ``out`` (see `train` for the other arguments)."""
    _check_options(settings)
    engine = make_engine(strategy)  # first: a multi-worker runtime must start before any other work
    try:
        return _run(engine, settings, out, resume, export, log)
    finally:
        engine.close()  # also after an early refusal: a multi-worker watchdog must not outlive the run


def _run(engine: Engine, settings: TrainSettings, out: Path, resume: bool, export: bool,
         log: Callable[[str], Any]) -> pd.DataFrame:
    me, replicas = engine.role, engine.replicas
    if settings.batch_size % replicas:
        raise InputError(
            f"`batch_size` {settings.batch_size} does not divide among {replicas} replicas; use a multiple of it"
        )
    if replicas % me.count:
        raise InputError(f"{replicas} replicas on {me.count} workers: give every machine the same number of GPUs")
    if me.is_chief and me.count == 1:
        run_folder.check_run_folder(out, resume)  # fail fast; with several workers, below, where they hear of it

    train_source = input_pipeline.open_source(settings.train, settings.images)
    valid_source = input_pipeline.open_source(settings.valid, settings.images)
    image_size = settings.image_size
    for source in (train_source, valid_source):
        input_pipeline.check_size(source, image_size)
    y_valid = label_files.label_matrix(valid_source.table).astype(np.float32)
    if not any(metrics.has_both_classes(column) for column in y_valid.T):
        raise InputError(
            f"{valid_source.name}: no finding has both positive and negative images, so validation AUC is "
            "undefined; use a larger validation set"
        )
    steps_per_epoch = input_pipeline.steps_per_epoch(train_source, settings.batch_size, me.count)
    distribution = {"name": engine.name, "replicas": replicas, "workers": me.count}
    epochs, patience = settings.epochs, settings.patience

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
            state, start_weights = _chief_setup(out, settings, distribution, train_source, valid_source, resume, log)
            if state is not None and state.finished(epochs, patience):
                _repair_finished(out, state, export, settings, log)
    except InputError as exc:
        failure = exc
    _stop_together(engine, failure)
    # Every worker learns where the chief stands: the epoch to continue after, whether that is the end, the
    # learning rate to continue with.
    start = [state.epoch, float(state.finished(epochs, patience)), state.lr] if state else [0, 0.0, settings.lr]
    start = engine.numbers_from_chief(start)
    if start[1]:
        engine.close()
        return run_folder.history_frame(state if me.is_chief else None)

    keras.utils.set_random_seed(settings.seed)  # the same on every worker: equal initial variables everywhere
    try:
        loss_fn = make_loss(settings.loss, train_source.table)
        net = engine.build(image_size, settings.lr, loss_fn, settings.mixed_precision, start_weights, settings.network)
        if me.is_chief and state is None:
            state = RunState(lr=settings.lr, seed=settings.seed)
            log(
                f"new run in {out}: {len(train_source):,} training and {len(valid_source):,} validation images, "
                f"{replicas} replica{'s' if replicas > 1 else ''} on {me.count} worker{'s' if me.count > 1 else ''} "
                f"({keras.backend.backend()})"
            )
        if me.is_chief and (note := precision.slow_here_note(settings.mixed_precision)):
            log(note)
        predict = engine.predictor(net) if me.is_chief else None
        epoch, lr_now = int(start[0]), start[2]
        while True:
            epoch += 1
            net.optimizer.learning_rate.assign(lr_now)
            started = time.monotonic()
            bar = ProgressBar(f"epoch {epoch}/{epochs}", steps_per_epoch, unit="steps") if me.is_chief else None
            on_step = None
            if bar is not None and bar.enabled:
                on_step = lambda i, loss, bar=bar: bar.update(i + 1, f"loss {loss:.3f}")  # noqa: E731
            train_loss = engine.train_epoch(
                net, train_source, image_size, settings.batch_size, steps_per_epoch,
                run_folder.epoch_seed(settings.seed, epoch), on_step, settings.jit_compile,
            )
            if bar is not None:
                bar.close()

            failure = None
            if me.is_chief:
                try:
                    state = _end_epoch(out, engine, net, state, predict, valid_source, image_size, loss_fn, epoch,
                                       lr_now, train_loss, started)
                    _log_epoch(log, epochs, state.history[-1], state, lr_now)
                except InputError as exc:
                    failure = exc
            _stop_together(engine, failure)
            decision = [state.lr, float(state.finished(epochs, patience))] if me.is_chief else [0.0, 0.0]
            decision = engine.numbers_from_chief(decision)
            lr_now = decision[0]
            if decision[1]:
                break

        failure = None
        if me.is_chief:
            if state.epoch < epochs:
                log(f"early stop: no val_mean_auc gain in {state.epochs_without_gain} epochs (patience {patience})")
            log(
                f"done: {state.epoch} epochs, best val_mean_auc {run_folder.format_auc(state.best_auc)} "
                f"at epoch {state.best_epoch} -> {out / run_folder.BEST}"
            )
            try:
                if export:
                    _export(out, settings, log)
            except InputError as exc:
                failure = exc
        _stop_together(engine, failure)  # the others wait for the export instead of leaving first
    finally:
        engine.close()  # the global policy and distribution must not leak into what runs next
    return run_folder.history_frame(state if me.is_chief else None)


# --- setup -----------------------------------------------------------------------------------------------------


def _chief_setup(
    out: Path,
    settings: TrainSettings,
    distribution: dict[str, Any],
    train_source: input_pipeline.Source,
    valid_source: input_pipeline.Source,
    resume: bool,
    log: Callable[[str], Any],
) -> tuple[RunState | None, Start | None]:
    """Start or resume the run folder; the state and the weights (and optimizer state) training starts from.

    Weights: the last complete epoch's checkpoint for a resumed run, the ``init_from`` checkpoint for
    fine-tuning, the ImageNet (or given) backbone for a new run; None means a random start.
    """
    image_size, init_from = settings.image_size, settings.init_from
    init_model, init_sha = None, None
    if init_from is not None:
        init_model = _init_checkpoint(init_from, image_size)
        init_sha = sha256_of(init_from)
    record = {**settings.record(init_sha), "strategy": distribution}
    config = run_folder.run_config(record, train_source, valid_source)
    run_folder.check_run_folder(out, resume)
    state = run_folder.read_for_resume(out, config, log) if resume else None
    if not resume:
        run_folder.start(out, config)
    if state is not None and not state.finished(settings.epochs, settings.patience):
        saved = _load_checkpoint(out, state)
        log(
            f"resuming {out} after epoch {state.epoch} (optimizer step {state.optimizer_iterations}, "
            f"lr {state.lr:.1e}, best val_mean_auc {run_folder.format_auc(state.best_auc)})"
        )
        if run_folder.best_needs_rewrite(state):
            _save_best(model_lib.load(run_folder.checkpoint_path(out, state.best_epoch)), out)
        run_folder.write_history(out, state)  # brings a history.csv left behind by a crash back in line
        run_folder.write_tensorboard(out, state)
        return state, (saved.get_weights(), [keras.ops.convert_to_numpy(v) for v in saved.optimizer.variables])
    if state is not None:
        return state, None
    if init_model is not None:
        log(f"fine-tuning from {init_from}")
        return None, (init_model.get_weights(), None)
    if settings.weights != "none":  # ImageNet (downloaded once) or a weights file, into the backbone
        return None, (model_lib.build(image_size, settings.weights).get_weights(), None)
    return None, None


def _repair_finished(out: Path, state: RunState, export: bool, settings: TrainSettings,
                     log: Callable[[str], Any]) -> None:
    """A complete run resumed: redo what a kill after its last checkpoint may have left undone."""
    if run_folder.best_needs_rewrite(state):
        _save_best(model_lib.load(run_folder.checkpoint_path(out, state.best_epoch)), out)
    run_folder.write_history(out, state)
    run_folder.write_tensorboard(out, state)
    done = f"all {state.epoch} epochs" if state.epochs_without_gain == 0 else f"{state.epoch} epochs"
    from pipeline.inference import serving

    if export and serving.exported(out / run_folder.BEST) is None:
        log(f"{out}: training already complete ({done}); the serving export is missing or stale, making it")
        _export(out, settings, log)
    else:
        log(f"{out}: already complete ({done}), nothing to resume")


def _stop_together(engine: Engine, failure: InputError | None) -> None:
    """Raise ``failure`` here, and on every other worker a note that one of them failed (one all-reduce)."""
    if engine.role.count > 1 and engine.any_worker(failure is not None) and failure is None:
        raise InputError("another worker stopped with an error (see its message); fix it and restart every worker")
    if failure is not None:
        raise failure


# --- one epoch -------------------------------------------------------------------------------------------------


def _validate(
    predict: Callable[[np.ndarray], np.ndarray],
    valid_source: input_pipeline.Source,
    image_size: int,
    loss_fn: keras.losses.Loss,
    epoch: int,
) -> tuple[float, float, list[float | None]]:
    """Validation loss, mean AUC and per-finding AUCs of the model (chief only)."""
    probabilities, labels = [], []
    for x, y in input_pipeline.evaluation_arrays(valid_source, image_size, VALID_BATCH):
        probabilities.append(np.asarray(predict(np.asarray(x)), np.float32))
        labels.append(np.asarray(y))
    probabilities, y_valid = np.concatenate(probabilities), np.concatenate(labels)
    if not np.isfinite(probabilities).all():
        raise InputError(f"training diverged at epoch {epoch} (non-finite predictions); use a lower `lr`")
    val_loss = float(keras.ops.convert_to_numpy(loss_fn(y_valid, probabilities)))
    return (val_loss, *validation_auc(y_valid, probabilities))


def _end_epoch(
    out: Path,
    engine: Engine,
    net: keras.Model,
    state: RunState,
    predict: Callable[[np.ndarray], np.ndarray],
    valid_source: input_pipeline.Source,
    image_size: int,
    loss_fn: keras.losses.Loss,
    epoch: int,
    lr: float,
    train_loss: float,
    started: float,
) -> RunState:
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
    return _commit_epoch(out, engine.local_model(net), state, row, engine.optimizer_iterations(net))


def _commit_epoch(out: Path, net: keras.Model, state: RunState, row: dict[str, Any], iterations: int) -> RunState:
    """Save an epoch in the one order that a kill at any moment leaves resumable; return the new state.

    Checkpoint first, then the state that points to it, then what can be rebuilt from the two: best.keras,
    history.csv and the TensorBoard logs. Last, checkpoints the state no longer needs are deleted.
    """
    epoch = row["epoch"]
    checkpoint = run_folder.checkpoint_path(out, epoch)
    model_lib.save(net, checkpoint)
    state = state.after_epoch(row, checkpoint.relative_to(out).as_posix(), iterations)
    run_folder.write_state(out, state)
    if state.best_epoch == epoch:
        _save_best(net, out)
    run_folder.write_history(out, state)
    run_folder.write_tensorboard(out, state)
    run_folder.remove_old_checkpoints(out, epoch)
    return state


def _export(out: Path, settings: TrainSettings, log: Callable[[str], Any]) -> None:
    """The inference export of ``best.keras`` and the typicality statistics, from (a sample of) the run's images.

    The export traces the model in TensorFlow (tf2onnx): under another backend it runs as ``export`` in a
    TensorFlow subprocess when TensorFlow and tf2onnx are installed, else the log says how to run it later.
    """
    command = [sys.executable, "-m", "pipeline", "export", "--run", os.fspath(out),
               "--train", settings.train, "--valid", settings.valid]
    if settings.images is not None:
        command += ["--images", settings.images]
    if keras.backend.backend() != "tensorflow":
        later = " ".join(["KERAS_BACKEND=tensorflow", "python", *command[1:]])
        if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None:
            log(f"no serving export here (it needs tensorflow and tf2onnx); on a machine with them run: {later}")
            return
        log("exporting best.keras for serving under TensorFlow (a subprocess) ...")
        done = subprocess.run(command, env={**os.environ, "KERAS_BACKEND": "tensorflow"}, capture_output=True,
                              text=True)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise InputError(f"the serving export failed ({why}); fix it and run: {later}")
        log(f"served by {out / 'best.onnx'}")
        return
    from pipeline.inference import serving

    log("exporting best.keras for serving and fitting the out-of-distribution guard ...")
    train_source = input_pipeline.open_source(settings.train, settings.images)
    valid_source = input_pipeline.open_source(settings.valid, settings.images)
    images = [input_pipeline.sample(source, serving.MAX_STATS_IMAGES, settings.image_size)
              for source in (train_source, valid_source)]
    summary = serving.add_serving_artifacts(out, model_lib.load(out / run_folder.BEST), *images)
    log(f"served by {Path(summary['export']).name}; typicality threshold {summary['threshold']:.3g} from "
        f"{summary['train_images']:,} training and {summary['valid_images']:,} validation images")


def _save_best(net: keras.Model, out: Path) -> None:
    """``best.keras``: float32 whatever the training precision, without optimizer state."""
    mixed = net.dtype_policy.name != "float32"
    model_lib.save_for_inference(precision.float32_copy(net) if mixed else net, out / run_folder.BEST)


def _log_epoch(log: Callable[[str], Any], epochs: int, row: dict[str, Any], state: RunState, lr: float) -> None:
    log(
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.3f}  val_loss {row['val_loss']:.3f}  "
        f"val_mean_auc {row['val_mean_auc']:.3f}  lr {lr:.1e}  best {state.best_auc:.3f}  ({row['seconds']:.0f} s)"
    )
    if state.lr < lr:
        log(f"no val_mean_auc gain in {run_folder.LR_PLATEAU_EPOCHS} epochs: learning rate {state.lr:.1e}")


def validation_auc(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[float | None]]:
    """Mean ROC AUC over the findings where it is defined, and each finding's AUC (None without both classes)."""
    aucs = [metrics.roc_auc(y_true[:, i], probabilities[:, i]) for i in range(y_true.shape[1])]
    defined = [auc for auc in aucs if auc is not None]
    return (float(np.mean(defined)) if defined else math.nan), aucs


# --- checkpoints, config, TensorBoard --------------------------------------------------------------------------


def _load_checkpoint(out: Path, state: RunState) -> keras.Model:
    """The last complete epoch's checkpoint, compiled with its optimizer state (checked against the state)."""
    path = out / state.checkpoint
    if not path.is_file():
        raise InputError(f"{path}: the checkpoint of epoch {state.epoch} is missing; start a new run")
    try:
        saved = keras.saving.load_model(path, compile=True, safe_mode=True)
    except Exception as exc:
        why = reason(exc, limit=150, typed=True)
        raise InputError(f"{path}: cannot load ({why}); the checkpoint is damaged") from None
    iterations = int(keras.ops.convert_to_numpy(saved.optimizer.iterations))
    if iterations != state.optimizer_iterations:
        raise InputError(
            f"{path}: optimizer step {iterations}, but {run_folder.STATE} says {state.optimizer_iterations}; "
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


def _check_options(settings: TrainSettings) -> None:
    if settings.image_size < model_lib.MIN_SIZE:
        raise InputError(f"`image_size` {settings.image_size}: DenseNet121 needs at least {model_lib.MIN_SIZE} px")
    if settings.epochs < 1:
        raise InputError(f"`epochs` {settings.epochs}: train for at least 1 epoch")
    if settings.batch_size < 1:
        raise InputError(f"`batch_size` {settings.batch_size}: must be at least 1")
    if not (math.isfinite(settings.lr) and settings.lr > 0):
        raise InputError(f"`lr` {settings.lr}: the learning rate must be a positive number, e.g. 1e-4")
    if settings.patience < 1:
        raise InputError(f"`patience` {settings.patience}: must be at least 1 epoch")
    if settings.network not in model_lib.NETWORKS:
        raise InputError(f"`network` {settings.network!r}: unknown; use one of {', '.join(model_lib.NETWORKS)}")
    if settings.network != "densenet121" and settings.weights != "none" and settings.init_from is None:
        raise InputError(f"`network` {settings.network} starts from random weights; use `weights` none")
    if not 0 <= settings.seed < 2**32:
        raise InputError(f"`seed` {settings.seed}: must be a whole number from 0 to 2**32 - 1")
