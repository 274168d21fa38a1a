"""tf.distribute strategies, worker roles and chief-to-worker broadcasts (the TensorFlow engine's; JAX: `jax_engine`).

Training runs one process per machine. ``multi-worker`` is `tf.distribute.MultiWorkerMirroredStrategy`
configured by the ``TF_CONFIG`` environment variable; it must be created before any other TensorFlow op
runs in the process (a tensor, a model, a dataset), because it starts the process's collective runtime
and fixes its devices: call `make_strategy` first, then build models and datasets under
``strategy.scope()``.

Only the chief (worker 0) reads and writes the run folder. It loads weights (resume, fine-tuning, ImageNet)
and reads the run state alone; `broadcast_from_chief` and `broadcast_numbers` then give every worker the
chief's values, so the other workers never need to see the chief's disk. Both are collective: every
worker must call them at the same point, with variables of the same shapes in the same order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from pipeline.core.errors import InputError
from pipeline.training.engine import STRATEGIES, WorkerRole

TF_CONFIG_HINT = (
    'set TF_CONFIG to JSON like {"cluster": {"worker": ["host1:port", "host2:port"]}, '
    '"task": {"type": "worker", "index": 0}} on each machine, with its own index'
)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for ``--strategy NAME`` (one of `STRATEGIES`).

    ``auto``: `tf.distribute.MirroredStrategy` over all GPUs when there are several, else the default
    strategy. ``one``: the default strategy (one device). ``mirrored``: MirroredStrategy over all GPUs, or
    over the logical CPU devices the process configured when it has no GPU. ``multi-worker``:
    MultiWorkerMirroredStrategy from ``TF_CONFIG`` (checked first; create it before any other TF op).
    """
    if name not in STRATEGIES:
        raise InputError(f"`strategy` {name!r}: unknown; use one of {', '.join(STRATEGIES)}")
    if name == "multi-worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one" or (name == "auto" and len(gpus) < 2):
        return tf.distribute.get_strategy()
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def check_tf_config(text: str | None) -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` of a worker, or a one-line `InputError` saying what is wrong and what to do."""
    if not text:
        raise InputError(f"`strategy` multi-worker needs the TF_CONFIG environment variable; {TF_CONFIG_HINT}")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise InputError(f"TF_CONFIG is not JSON ({exc}); {TF_CONFIG_HINT}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise InputError(f"TF_CONFIG needs cluster.worker, a list of 'host:port' strings; {TF_CONFIG_HINT}")
    if set(cluster) - {"worker"}:
        extra = ", ".join(sorted(set(cluster) - {"worker"}))
        raise InputError(f"TF_CONFIG cluster has {extra}; list every machine under cluster.worker (worker 0 is chief)")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") != "worker":
        raise InputError(f'TF_CONFIG needs task {{"type": "worker", "index": N}}; {TF_CONFIG_HINT}')
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(workers):
        raise InputError(
            f"TF_CONFIG task.index is {index!r} but cluster.worker has {len(workers)} entries; "
            f"give each machine its own index from 0 to {len(workers) - 1}"
        )
    return config


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The `STRATEGIES` name of a strategy object (``"auto"`` resolves to one of the others)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi-worker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "one"


def role(strategy: tf.distribute.Strategy) -> WorkerRole:
    """The worker role of this process: worker 0 of ``TF_CONFIG`` is chief; one process is worker 0 of 1."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and resolver is not None:
        count = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
        index = int(resolver.task_id or 0)
        return WorkerRole(index=index, count=count, is_chief=index == 0)
    return WorkerRole(index=0, count=1, is_chief=True)


def broadcast_from_chief(strategy: tf.distribute.Strategy, variables: Sequence[Any]) -> None:
    """Set every worker's copy of ``variables`` (Keras or tf variables) to the chief's values.

    Call it on every worker after the chief alone has loaded weights, e.g. with
    ``model.weights + optimizer.variables`` (build the optimizer first: ``optimizer.build(model.trainable_variables)``).
    The variables are packed into one vector per dtype and all-reduced with SUM, replica 0 (the chief's first
    device) contributing its values and every other replica zeros, which any strategy supports and which
    is exact (adding zeros), then assigned on every device.
    """
    _reduce_into(strategy, list(variables), chief_only=True)


def average_over_replicas(strategy: tf.distribute.Strategy, variables: Sequence[Any]) -> None:
    """Set every replica's copy of ``variables`` to their mean over all replicas of all workers.

    For BatchNormalization's moving statistics: Keras 3 creates them with ``aggregation="none"``, so in a
    custom loop each replica updates its own copy from its own part of the batch and the copies drift apart
    (trainable weights stay equal: their gradients are summed). Call this on every worker before validating
    or saving, with ``[w for w in model.non_trainable_weights]``; the mean of the copies is the moving mean
    of the whole batches (and about their moving variance).
    """
    _reduce_into(strategy, list(variables), chief_only=False)


def broadcast_numbers(strategy: tf.distribute.Strategy, values: Sequence[float]) -> list[float]:
    """The chief's ``values`` on every worker (run state: epoch, learning rate, stop flag); float64, exact."""
    if not len(values):
        return []
    (result,) = _reduce(strategy, [tf.constant(np.asarray(values, dtype=np.float64))], chief_only=True)
    return [float(x) for x in result.numpy()]


def any_worker(strategy: tf.distribute.Strategy, flag: bool) -> bool:
    """Whether ``flag`` is true on any worker (e.g. "I failed"): collective, every worker must call it."""

    def send() -> tf.Tensor:
        return tf.constant(float(flag), tf.float64)  # each replica of a worker says the same

    if strategy.num_replicas_in_sync == 1:
        return flag
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(send)), axis=None)
    return bool(total.numpy() > 0)


def _reduce_into(strategy: tf.distribute.Strategy, variables: list[Any], chief_only: bool) -> None:
    if not variables:
        return
    for variable, value in zip(variables, _reduce(strategy, variables, chief_only), strict=True):
        variable.assign(value)


def _reduce(strategy: tf.distribute.Strategy, items: list[Any], chief_only: bool) -> list[tf.Tensor]:
    """Each item (variable or tensor) as replica 0 holds it (``chief_only``) or averaged over replicas.

    One all-reduce per dtype: float32 and float64 travel as they are, everything else as float64 (exact for
    integers below 2**53). Variables are read inside each replica, so every replica sends its own copy.
    """
    shapes = [tuple(_value(item).shape) for item in items]
    dtypes = [_value(item).dtype for item in items]
    groups: dict[tf.dtypes.DType, list[int]] = {}
    for i, dtype in enumerate(dtypes):
        groups.setdefault(dtype if dtype in (tf.float32, tf.float64) else tf.float64, []).append(i)
    results: dict[int, tf.Tensor] = {}
    for wire, indices in groups.items():

        def send(indices: list[int] = indices, wire: tf.dtypes.DType = wire) -> tf.Tensor:
            packed = tf.concat([tf.reshape(tf.cast(_value(items[i]), wire), [-1]) for i in indices], axis=0)
            if not chief_only:
                return packed
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            return tf.where(tf.equal(replica, 0), packed, tf.zeros_like(packed))

        op = tf.distribute.ReduceOp.SUM if chief_only else tf.distribute.ReduceOp.MEAN
        reduced = strategy.reduce(op, strategy.run(tf.function(send)), axis=None)
        offset = 0
        for i in indices:
            size = int(np.prod(shapes[i], dtype=np.int64))
            results[i] = tf.cast(tf.reshape(reduced[offset : offset + size], shapes[i]), dtypes[i])
            offset += size
    return [results[i] for i in range(len(items))]


def _value(item: Any) -> tf.Tensor:
    """A tensor of ``item``: in a replica context a mirrored variable gives that replica's own copy."""
    if isinstance(item, tf.Tensor):
        return item
    return tf.convert_to_tensor(getattr(item, "value", item))  # a Keras variable wraps its tf.Variable in .value
