"""The TensorFlow engine of `pipeline.training.engine`: a custom step under a `tf.distribute` strategy.

Kept backend-specific because it measures faster on CPUs (the fused BatchNormalization of
`pipeline.networks.batchnorm`, 1.18x per DenseNet121 step) and because Keras's ``fit`` fails under
MultiWorkerMirroredStrategy (`pipeline.training.steps`). Strategies, roles and broadcasts are
`pipeline.training.distribution`'s.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from pipeline.data import input_pipeline
from pipeline.networks import densenet as model_lib
from pipeline.training import distribution, precision, steps
from pipeline.training.engine import set_start


class TensorFlowEngine:
    """`pipeline.training.engine.Engine` on TensorFlow."""

    def __init__(self, strategy: str | tf.distribute.Strategy) -> None:
        if isinstance(strategy, str):
            strategy = distribution.make_strategy(strategy)  # first: multi-worker must precede every other op
        self.strategy = strategy
        self.role = distribution.role(strategy)
        self.replicas = strategy.num_replicas_in_sync
        self.name = distribution.strategy_name(strategy)
        self._step: steps.TrainStep | None = None

    def build(self, image_size: int, lr: float, loss: keras.losses.Loss, mixed_precision: bool,
              start: tuple[list, list | None] | None, network: str = "densenet121") -> keras.Model:
        precision.set_mixed_precision(mixed_precision)
        with self.strategy.scope():
            net = model_lib.build(image_size, "none", network)
            optimizer = keras.optimizers.Adam(learning_rate=lr)
            if precision.needs_loss_scaling(mixed_precision):
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(net.trainable_variables)
            net.compile(optimizer=optimizer, loss=loss)  # so that checkpoints carry the optimizer state
        set_start(net, start)
        if self.role.count > 1:
            distribution.broadcast_from_chief(self.strategy, [*net.weights, *optimizer.variables])
        return net

    def train_epoch(self, net: keras.Model, source: input_pipeline.Source, image_size: int, batch_size: int,
                    steps_per_epoch: int, seed: int, on_step: Callable[[int, float], None] | None,
                    jit_compile: bool) -> float:
        if self._step is None:
            self._step = steps.make_train_step(self.strategy, net, net.loss, net.optimizer, batch_size,
                                               jit_compile=jit_compile)

        def dataset(context: tf.distribute.InputContext) -> tf.data.Dataset:
            """Per input pipeline (one per worker): its shards, in per-replica batches."""
            per_replica = context.get_per_replica_batch_size(batch_size)
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
            return input_pipeline.training_batches(
                source, image_size, per_replica, steps_per_epoch * local_replicas, seed,
                worker=context.input_pipeline_id, workers=context.num_input_pipelines,
            )

        loss = steps.train_epoch(self.strategy, self._step, dataset, steps_per_epoch, on_step=on_step)
        if self.replicas > 1:  # BatchNormalization's moving statistics are per replica in a custom loop
            distribution.average_over_replicas(self.strategy, net.non_trainable_weights)
        return loss

    def numbers_from_chief(self, values: list[float]) -> list[float]:
        return distribution.broadcast_numbers(self.strategy, values) if self.role.count > 1 else list(values)

    def any_worker(self, flag: bool) -> bool:
        return distribution.any_worker(self.strategy, flag) if self.role.count > 1 else flag

    def predictor(self, net: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
        """A traced function, called directly: no collectives, so the chief validates alone."""
        spec = tf.TensorSpec((None, *net.input_shape[1:]), tf.float32)
        traced = tf.function(lambda x: tf.cast(net(x, training=False), tf.float32), input_signature=[spec])
        return lambda x: traced(x).numpy()

    def local_model(self, net: keras.Model) -> keras.Model:
        return net

    def optimizer_iterations(self, net: keras.Model) -> int:
        return int(tf.convert_to_tensor(net.optimizer.iterations.value))  # a MirroredVariable under tf.distribute

    def close(self) -> None:
        precision.set_mixed_precision(False)
