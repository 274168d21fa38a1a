"""Scripts the distribution tests run in fresh processes (strategies and policies are per process).

``python tests/training/distribute_worker.py MODE REPORT.npz [PATH]``, MODE one of:

- ``multi-worker REPORT RUN_DIR``: one worker of a two-worker MultiWorkerMirroredStrategy run (TF_CONFIG
  set), or without TF_CONFIG the single-process reference run: one epoch of a tiny model on real NIH images
  at 64 px with the project's weighted loss; the chief alone saves a checkpoint in RUN_DIR while the other
  worker goes on to the next collective; one more step; the chief alone reads the checkpoint back and
  `broadcast_from_chief` gives it to everyone.
- ``mirrored REPORT``: two logical CPU devices; the same training under MirroredStrategy and the default
  strategy, and BatchNormalization's moving statistics before and after `average_over_replicas`.
- ``mixed REPORT CHECKPOINT``: DenseNet121 at 64 px under mixed_float16 with loss scaling, `MIXED_STEPS` steps,
  saved to CHECKPOINT, with its predictions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
MODE = sys.argv[1] if __name__ == "__main__" else ""

import tensorflow as tf  # noqa: E402

if MODE == "mirrored":  # before TensorFlow initialises its devices
    CPU = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

from pipeline.training import distribution, precision  # noqa: E402

# MultiWorkerMirroredStrategy must come before any other TF op.
STRATEGY = distribution.make_strategy("multi-worker" if os.environ.get("TF_CONFIG") else "one")

import cv2  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.core.errors import InputError  # noqa: E402
from pipeline.networks import losses  # noqa: E402
from pipeline.networks.densenet import save  # noqa: E402
from pipeline.training import steps  # noqa: E402

SIZE = 64
IMAGES = 20  # 3 global batches of 8: 8, 8 and a short one of 4
GLOBAL_BATCH = 8
MIXED_STEPS = 8


def data() -> tuple[np.ndarray, np.ndarray]:
    """The first real NIH images at 64 px and seeded 0/1 labels for the 14 findings."""
    files = sorted((REPO / "nih" / "images").glob("*.png"))[:IMAGES]
    images = np.stack([cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (SIZE, SIZE)) for f in files])
    labels = (np.random.default_rng(0).random((IMAGES, 14)) < 0.3).astype("float32")
    return images[..., None].astype("float32"), labels


def tiny_model() -> keras.Model:
    """A small conv net on the model's input and output shapes (no BatchNormalization: exact comparisons)."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(14, activation="sigmoid")(x))


def multi_worker(report: Path, run_dir: Path) -> None:
    """Two-worker run: broadcast, one epoch, chief-only save, resume from the chief's checkpoint."""
    me = distribution.role(STRATEGY)
    keras.utils.set_random_seed(1)
    images, labels = data()
    with STRATEGY.scope():
        model = tiny_model()
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)
    # MWMS copies the chief's initial values into every worker's new variables; weights loaded later by one
    # worker are not copied, which is what broadcast_from_chief is for. Stand-in: other weights on the others.
    if not me.is_chief:
        keras.utils.set_random_seed(2)
        model.set_weights(tiny_model().get_weights())
    initial = [w.numpy() for w in model.weights]
    distribution.broadcast_from_chief(STRATEGY, model.weights + optimizer.variables)
    broadcast = [w.numpy() for w in model.weights]

    loss = losses.WeightedBinaryCrossentropy(*losses.class_weights(labels))
    with STRATEGY.scope():
        model.compile(optimizer=optimizer, loss=loss)  # so the checkpoint holds the optimizer's state too
    step = steps.make_train_step(STRATEGY, model, loss, optimizer, GLOBAL_BATCH)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    running: list[float] = []
    epoch_loss = steps.train_epoch(STRATEGY, step, dataset, 3, on_step=lambda i, value: running.append(value))
    trained = [w.numpy() for w in model.weights]

    checkpoint = run_dir / "model.keras"
    if me.is_chief:  # alone, while the other worker already waits in the next collective
        save(model, checkpoint)
        # Chief-only validation by a direct call (no collective); model.predict here would issue collectives
        # that the other worker does not, and MWMS aborts both ("Collective ops is aborted").
        validation = np.asarray(model(images[:4], training=False))
    else:
        validation = np.zeros((0, 14), "float32")
    numbers = distribution.broadcast_numbers(STRATEGY, [1.0, 0.01, 0.0] if me.is_chief else [0.0, 0.0, 0.0])
    steps.train_epoch(STRATEGY, step, dataset, 1)  # moves the weights away from the checkpoint
    if me.is_chief:  # resume: the chief alone reads the run folder
        saved = keras.models.load_model(checkpoint)
        model.set_weights(saved.get_weights())
        for mine, theirs in zip(optimizer.variables, saved.optimizer.variables, strict=True):
            mine.assign(theirs)
    loaded = [w.numpy() for w in model.weights]
    distribution.broadcast_from_chief(STRATEGY, model.weights + optimizer.variables)
    resumed = [w.numpy() for w in model.weights + optimizer.variables]
    # The input path of prepared shards: each worker builds its own pipeline from a dataset function.
    _, fn_running = train(STRATEGY, tiny_model, images, labels, per_replica=True, steps_per_epoch=2)
    np.savez(
        report,
        running=np.array(running),
        epoch_loss=epoch_loss,
        numbers=np.array(numbers),
        validation=validation,
        role=np.array([me.index, me.count, me.is_chief]),
        fn_running=np.array(fn_running),
        iterations=int(optimizer.iterations.numpy()),  # 3 + 1 steps, then back to the checkpoint's 3
        **{f"initial_{i}": w for i, w in enumerate(initial)},
        **{f"broadcast_{i}": w for i, w in enumerate(broadcast)},
        **{f"trained_{i}": w for i, w in enumerate(trained)},
        **{f"loaded_{i}": w for i, w in enumerate(loaded)},
        **{f"resumed_{i}": w for i, w in enumerate(resumed)},
    )


def train(
    strategy: tf.distribute.Strategy,
    model_fn,
    images,
    labels,
    epochs: int = 1,
    jit_compile: bool = False,
    per_replica: bool = False,
    steps_per_epoch: int = 3,
):
    """Train a fresh ``model_fn()`` (seed 1) under ``strategy``: the model and the per-step running losses.

    ``per_replica``: give `steps.train_epoch` a dataset function batching per replica instead of a dataset.
    """
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = model_fn()
        optimizer = keras.optimizers.Adam(1e-2)
    loss = losses.WeightedBinaryCrossentropy(*losses.class_weights(labels))
    step = steps.make_train_step(strategy, model, loss, optimizer, GLOBAL_BATCH, jit_compile=jit_compile)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(GLOBAL_BATCH)
    if per_replica:

        def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
            batch = context.get_per_replica_batch_size(GLOBAL_BATCH)
            # Worker i takes every n-th per-replica batch: global batch k is the same 8 images as one process's.
            batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
            return batches.shard(context.num_input_pipelines, context.input_pipeline_id)

    running: list[float] = []
    for _ in range(epochs):
        steps.train_epoch(strategy, step, dataset, steps_per_epoch, on_step=lambda i, value: running.append(value))
    return model, running


def bn_model() -> keras.Model:
    """`tiny_model` with a BatchNormalization layer."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(14, activation="sigmoid")(x))


def mirrored(report: Path) -> None:
    """MirroredStrategy over two logical CPUs against the default strategy, and BN statistics averaging."""
    strategy = distribution.make_strategy("mirrored")
    images, labels = data()
    one, one_running = train(tf.distribute.get_strategy(), tiny_model, images, labels, epochs=2)
    two, two_running = train(strategy, tiny_model, images, labels, epochs=2)
    _, jit_running = train(tf.distribute.get_strategy(), tiny_model, images, labels, epochs=2, jit_compile=True)
    try:
        train(strategy, tiny_model, images, labels, jit_compile=True)
        jit_refused = ""
    except InputError as error:
        jit_refused = str(error)
    # Two steps: the third would give replica 1 an empty batch (the 5th batch of 4 goes to replica 0 alone).
    _, fn_running = train(strategy, tiny_model, images, labels, per_replica=True, steps_per_epoch=2)
    bn, _ = train(strategy, bn_model, images, labels)
    stats = [w for w in bn.non_trainable_weights if "moving" in w.path]
    before = [np.stack([c.numpy() for c in w.value.values]) for w in stats]
    distribution.average_over_replicas(strategy, bn.non_trainable_weights)
    after = [np.stack([c.numpy() for c in w.value.values]) for w in stats]
    np.savez(
        report,
        replicas=strategy.num_replicas_in_sync,
        one_running=one_running,
        two_running=two_running,
        jit_running=jit_running,
        jit_refused=jit_refused,
        fn_running=fn_running,
        weight_diff=max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), two.get_weights(), strict=True)),
        **{f"before_{i}": w for i, w in enumerate(before)},
        **{f"after_{i}": w for i, w in enumerate(after)},
    )


def mixed(report: Path, checkpoint: Path) -> None:
    """DenseNet121 at 64 px trained `MIXED_STEPS` steps under mixed_float16 with loss scaling, saved, predicted."""
    from pipeline.networks import densenet as chexnet

    precision.set_mixed_precision(True)
    images, labels = data()
    keras.utils.set_random_seed(1)
    model = chexnet.build(SIZE, "none")
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
    start = [w.numpy() for w in model.trainable_weights]
    loss = losses.WeightedBinaryCrossentropy(*losses.class_weights(labels))
    step = steps.make_train_step(STRATEGY, model, loss, optimizer, 4)
    dataset = tf.data.Dataset.from_tensor_slices((images[:12], labels[:12])).batch(4).repeat()
    running: list[float] = []
    # The first steps overflow float16 at the initial scale 2**15 and are skipped while the scale halves.
    steps.train_epoch(STRATEGY, step, dataset, MIXED_STEPS, on_step=lambda i, value: running.append(value))
    save(precision.float32_copy(model), checkpoint)
    np.savez(
        report,
        running=running,
        applied=int(optimizer.inner_optimizer.iterations.numpy()),
        scale=float(optimizer.dynamic_scale.numpy()),
        moved=max(float(np.abs(a - w.numpy()).max()) for a, w in zip(start, model.trainable_weights, strict=True)),
        compute_dtype=str(model.get_layer("relu").compute_dtype),
        output_dtype=str(model.output.dtype),
        probabilities=np.asarray(model(images, training=False)),
    )


if __name__ == "__main__":
    {"multi-worker": multi_worker, "mirrored": mirrored, "mixed": mixed}[MODE](*map(Path, sys.argv[2:]))
