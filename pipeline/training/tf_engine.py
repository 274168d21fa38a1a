"""The TensorFlow engine of `pipeline.training.engine`: a custom step under a `tf.distribute` strategy.

Kept backend-specific because it measures faster on CPUs (the fused BatchNormalization of
`pipeline.networks.batchnorm`, 1.18x per DenseNet121 step) and because Keras's ``fit`` fails under
MultiWorkerMirroredStrategy (`pipeline.training.steps`). Strategies, roles and broadcasts are
`pipeline.training.distribution`'s.

A worker that dies (``multi-worker``). MultiWorkerMirroredStrategy starts TensorFlow's coordination service:
its server in worker 0, an agent in every worker that sends it heartbeats from a C++ thread. A killed
peer's closed connections fail the survivors' collectives at once; a peer that stops answering without
closing them (a machine gone from the network; SIGSTOP in the tests) is declared dead by the service after
its heartbeat timeout (10 s in TensorFlow 2.21), which aborts every survivor's collectives. Either way
TensorFlow raises in the collective (a long traceback, exit status 1), which
`pipeline.training.watchdog.collective` turns into one line. The `pipeline.training.watchdog.Watchdog`
beats through the same service's key-value store (`key_value_watchdog`), so the stop is bounded at 22 s
by this project's numbers, whatever TensorFlow's own timeout. Measured on 127.0.0.1: docs/distributed.md.
TensorFlow reports a failed collective as a ``tf.errors.OpError``; any other exception is a bug, and keeps
its traceback.

What this relies on, probed on TensorFlow 2.21: ``set_config_key_value``, ``delete_config_key_value`` and
``get_config_key_value(key, timeout_in_ms)`` of ``tensorflow.python.eager.context.context()``, the
coordination service's key-value store, which TensorFlow's own failure handling
(`tf.distribute.experimental.PreemptionCheckpointHandler`) uses too. They answer from a background thread
while the main thread waits in a collective (1-4 ms a call); a key cannot be overwritten, hence delete
then set. ``check_collective_ops_peer_health`` was not chosen: TensorFlow turns its own health-check thread
off when the coordination service runs, and it probes a peer's collective runtime, not its training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.data import input_pipeline
from pipeline.networks import densenet as model_lib
from pipeline.training import distribution, precision, steps
from pipeline.training.engine import set_start
from pipeline.training.watchdog import Watchdog, collective, first_line

GET_TIMEOUT_MS = 200  # a heartbeat read waits this long for a key not yet written (0 would wait forever)


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
        several = self.role.count > 1
        self._watchdog = key_value_watchdog(self.role.index, self.role.count) if several else None
        self._collective = (lambda: collective(_describe, (tf.errors.OpError,))) if several else contextlib.nullcontext

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
            with self._collective():
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

        with self._collective():
            loss = steps.train_epoch(self.strategy, self._step, dataset, steps_per_epoch, on_step=on_step)
            if self.replicas > 1:  # BatchNormalization's moving statistics are per replica in a custom loop
                distribution.average_over_replicas(self.strategy, net.non_trainable_weights)
        return loss

    def numbers_from_chief(self, values: list[float]) -> list[float]:
        if self.role.count == 1:
            return list(values)
        with self._collective():
            return distribution.broadcast_numbers(self.strategy, values)

    def any_worker(self, flag: bool) -> bool:
        if self.role.count == 1:
            return flag
        with self._collective():
            return distribution.any_worker(self.strategy, flag)

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
        if self._watchdog is not None:
            self._watchdog.stop()
        precision.set_mixed_precision(False)


def key_value_watchdog(index: int, count: int, **options: Any) -> Watchdog:
    """A `Watchdog` on the coordination service's key-value store (the module docstring says why it works).

    Start it after MultiWorkerMirroredStrategy; ``options`` are `Watchdog`'s (tests shorten the intervals).
    """
    from tensorflow.python.eager import context

    runtime = context.context()

    def put(key: str, value: str) -> None:
        runtime.delete_config_key_value(key)  # a missing key is no error
        runtime.set_config_key_value(key, value)

    return Watchdog(put, lambda key: runtime.get_config_key_value(key, GET_TIMEOUT_MS), index, count, **options)


def _describe(exc: Exception) -> str:
    """The cause in TensorFlow's collective error, without its op names and advice: "Socket closed", ..."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for at, line in enumerate(lines):
        if "aborted by:" in line:
            cause = line.split("aborted by:", 1)[1].strip()
            if cause.endswith(":") and at + 1 < len(lines):  # "... unhealthy (stopped sending heartbeats):"
                cause = f"{cause} {lines[at + 1]}"  # then the task, on the next line
            return cause[:200]
    return first_line(exc)
