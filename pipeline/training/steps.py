"""The distributed training step and epoch: a custom loop over `strategy.run`, for every strategy.

Keras 3's ``Model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so training runs
its own step: each replica computes the per-example losses of its part of the global batch, divides their
sum by the number of examples in the whole global batch (all-reduced, so a short last batch is weighted
right), and the optimizer sums the replicas' gradients. The result equals one device's step on the whole
batch, except for BatchNormalization, whose batch statistics are computed per replica.

Every worker of a multi-worker run must call the step the same number of times, since each step holds
collective ops that wait for all workers: give `train_epoch` a fixed ``steps`` and a dataset that does not
run out first (``.repeat()``), see `train_epoch`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import keras
import tensorflow as tf

from pipeline.core.errors import InputError

TrainStep = Callable[[Iterator[Any]], tuple[tf.Tensor, tf.Tensor]]


def make_train_step(
    strategy: tf.distribute.Strategy,
    model: keras.Model,
    loss: keras.losses.Loss,
    optimizer: keras.optimizers.Optimizer,
    global_batch_size: int,
    *,
    jit_compile: bool = False,
) -> TrainStep:
    """``step(distributed_iterator) -> (mean_loss, examples)``: one training step on the next global batch.

    Parameters
    ----------
    strategy
        The strategy under whose ``scope()`` the caller built ``model`` and ``optimizer``.
    loss
        A Keras loss (e.g. `pipeline.networks.losses.WeightedBinaryCrossentropy`); its per-example values are used.
    optimizer
        Under the ``mixed_float16`` policy, a ``keras.optimizers.LossScaleOptimizer``.
    global_batch_size
        The nominal global batch (all replicas together); checked, the actual count of each batch is used.
    jit_compile
        Compile the step with XLA; one replica only (refused with several, as Keras's ``fit`` turns XLA off
        under tf.distribute: XLA on two logical CPU devices read a variable from the other replica's device).

    Returns
    -------
    A traced function returning the batch's global mean loss (sum of per-example losses over all replicas
    divided by the number of examples in the global batch) and that number of examples, as scalar tensors.
    """
    if global_batch_size < strategy.num_replicas_in_sync:
        raise InputError(
            f"`batch_size` {global_batch_size} is smaller than the {strategy.num_replicas_in_sync} replicas; "
            "use a global batch of at least one image per replica"
        )
    if jit_compile and strategy.num_replicas_in_sync > 1:
        # XLA read a replica's variable from another device here; Keras's fit turns XLA off under tf.distribute too.
        raise InputError(
            f"`jit_compile` works on one device only, not with {strategy.num_replicas_in_sync} replicas; "
            "drop `jit_compile` or use `strategy` one"
        )
    mixed = keras.mixed_precision.global_policy().name == "mixed_float16"
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if mixed and not scaled:
        raise InputError(
            "mixed precision needs loss scaling; wrap the optimizer: keras.optimizers.LossScaleOptimizer(optimizer)"
        )
    if not optimizer.built:  # its slot variables must exist before tracing, as mirrored variables
        with strategy.scope():
            optimizer.build(model.trainable_variables)
    per_example = loss.__class__.from_config({**loss.get_config(), "reduction": None})

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        context = tf.distribute.get_replica_context()
        count = tf.cast(tf.shape(labels)[0], tf.float32)
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            losses = per_example(labels, tf.cast(probabilities, tf.float32))
            local = tf.reduce_sum(tf.cast(losses, tf.float32)) / tf.maximum(total, 1.0)
            if model.losses:  # regularisers: once per global batch, spread over replicas
                local += tf.add_n([tf.cast(x, tf.float32) for x in model.losses]) / strategy.num_replicas_in_sync
            target = optimizer.scale_loss(local)
        variables = model.trainable_variables
        gradients = tape.gradient(target, variables)
        if scaled:
            gradients = _agree_on_finite(context, gradients)
        optimizer.apply(gradients, variables)
        return local, count

    # XLA compiles the per-replica computation; strategy.run and the iterator stay outside it, as in Keras's fit.
    replica_fn = tf.function(replica_step, jit_compile=True) if jit_compile else replica_step

    @tf.function
    def step(iterator: Iterator[Any]) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = next(iterator)
        local, count = strategy.run(replica_fn, args=(images, labels))
        mean = strategy.reduce(tf.distribute.ReduceOp.SUM, local, axis=None)
        examples = strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None)
        return mean, examples

    return step


def train_epoch(
    strategy: tf.distribute.Strategy,
    step: TrainStep,
    dataset: tf.data.Dataset | Callable[[tf.distribute.InputContext], tf.data.Dataset] | Any,
    steps: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Run ``steps`` training steps and return the epoch's per-example mean loss.

    ``dataset`` is a batched `tf.data.Dataset` of ``(images, labels)`` with the global batch (distributed
    here with ``experimental_distribute_dataset``), a function of a `tf.distribute.InputContext` returning
    one replica's batches (``distribute_datasets_from_function``), or an already distributed dataset or
    iterator. ``on_step(i, running_mean_loss)`` is called after each step (progress bars).

    ``steps`` is required: under MultiWorkerMirroredStrategy every worker must run the same number of
    collective steps or the others wait forever. With prepared shards divided among workers, compute it
    identically on every worker from the worker with the most examples (`pipeline.data.input_pipeline.steps_per_epoch`),
    and let each worker's dataset ``.repeat()`` so that a worker with fewer examples never runs out first.
    Each call takes a fresh iterator unless given one.

    A short last batch is weighted by its actual size, but with several replicas it must still give every
    replica at least one example: an empty replica batch fails in the convolutions (seen on CPU with a dataset
    function whose last batch went to one replica). Repeating the data with a fixed ``steps``, or
    ``drop_remainder=True``, avoids short batches altogether.
    """
    if steps < 1:
        raise InputError(f"steps per epoch must be at least 1, got {steps}")
    if isinstance(dataset, tf.data.Dataset):
        dataset = strategy.experimental_distribute_dataset(dataset)
    elif callable(dataset) and not hasattr(dataset, "__iter__"):
        dataset = strategy.distribute_datasets_from_function(dataset)
    iterator = dataset if hasattr(dataset, "get_next") else iter(dataset)
    sums: list[tf.Tensor] = []  # kept on the device; read back each step only for on_step
    counts: list[tf.Tensor] = []
    loss_sum = examples = 0.0
    for index in range(steps):
        try:
            mean, count = step(iterator)
        except tf.errors.OutOfRangeError:
            raise InputError(
                f"the training data ran out after {index} of {steps} steps; repeat the dataset (.repeat()) "
                "or compute steps from the number of examples"
            ) from None
        if on_step is None:
            sums.append(mean * count)
            counts.append(count)
            continue
        loss_sum += float(mean) * float(count)
        examples += float(count)
        on_step(index, loss_sum / max(examples, 1.0))
    if on_step is None:
        loss_sum, examples = float(tf.add_n(sums)), float(tf.add_n(counts))
    return loss_sum / max(examples, 1.0)


def _agree_on_finite(context: tf.distribute.ReplicaContext, gradients: list[Any]) -> list[Any]:
    """Gradients made non-finite on every replica when any replica's are, so all skip the step together.

    `keras.optimizers.LossScaleOptimizer` decides to skip from the first local replica's gradients before
    they are summed; under several workers one worker could then apply while another skips, and their
    weights (and collectives) would part. One scalar all-reduce makes the decision the same everywhere.
    """
    bad = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in gradients if g is not None])
    finite = tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, bad), 0.0)
    nan = tf.constant(float("nan"))
    return [g if g is None else tf.where(finite, g, tf.cast(nan, g.dtype)) for g in gradients]
