"""The JAX engine of `pipeline.training.engine`: Keras's own ``train_on_batch`` under `keras.distribution`.

Devices. ``auto`` and ``mirrored`` train data-parallel (`keras.distribution.DataParallel`) over every device
JAX sees, ``one`` on the first. ``multi-worker`` first joins the processes of several machines with
`jax.distributed.initialize`, configured by the environment variables of `ENV` (docs/distributed.md); the
devices of all processes then form one data-parallel mesh. ``--batch-size`` is the global batch: each
process feeds ``batch_size / processes`` images of its own shards (`pipeline.data.input_pipeline`), which
Keras assembles into the global batch. Every process sets the same seed before building the model, so the
variables start equal everywhere; the chief then broadcasts what it loaded (resume, fine-tuning, ImageNet).

Only the chief writes the run folder. With several processes the variables span devices the chief cannot
read alone, so it validates and saves a local copy of the model (`JaxEngine.local_model`).

A process that dies (SIGKILL) leaves the others in a collective. Where the collective fails (gloo on CPUs
reports "connection closed by peer" at once), the survivor prints one line and ends with exit status 1
(`pipeline.training.watchdog.collective`); ending at once matters, because a normal exit waits in
jax.distributed's shutdown barrier and is then aborted (exit 134, a C++ stack and no useful line). Where it
would block instead (a machine gone from the network), the `pipeline.training.watchdog.Watchdog` of every
process beats through `jax.distributed`'s key-value store every `watchdog.HEARTBEAT_S` seconds and watches the
others' beats; a peer (or the coordinator, process 0) silent for `watchdog.SILENT_S` seconds ends the process the
same way. So survivors stop within `SILENT_S` + `HEARTBEAT_S` seconds (22 s), before the coordination
service's own abort (`HEARTBEAT_TIMEOUT_S`).

One case keeps JAX's own message: when the coordinator (process 0) dies, jax.distributed's client may notice
first (within about a second) and abort the survivors itself, exit status 134, with the line "Terminating
process because the JAX distributed service detected fatal errors. This most likely indicates that another
task died" and a C++ stack. `jax.distributed.initialize` offers no hook for it (the client's
``missed_heartbeat_callback``, passed through private API, crashed with std::bad_cast in jaxlib 0.10.2).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from pipeline.core.errors import InputError
from pipeline.networks import densenet as model_lib
from pipeline.training import precision
from pipeline.training.engine import STRATEGIES, WorkerRole, set_start
from pipeline.training.watchdog import Watchdog, collective

ENV = {
    "coordinator": "JAX_COORDINATOR_ADDRESS",  # host:port of process 0, reachable from every machine
    "processes": "JAX_NUM_PROCESSES",  # how many processes (one per machine)
    "process": "JAX_PROCESS_ID",  # this process's index, 0 to JAX_NUM_PROCESSES - 1; 0 writes the run folder
}
ENV_HINT = (
    "set JAX_COORDINATOR_ADDRESS=host:port (process 0's machine), JAX_NUM_PROCESSES=N and JAX_PROCESS_ID=I "
    "(0 to N-1, its own on each machine)"
)
HEARTBEAT_TIMEOUT_S = 60  # jax.distributed's own abort, the backstop should the watchdog itself be stuck


class JaxEngine:
    """`pipeline.training.engine.Engine` on JAX."""

    def __init__(self, strategy: Any = "auto") -> None:
        import jax

        if strategy not in STRATEGIES:
            raise InputError(f"`strategy` {strategy!r}: unknown; use one of {', '.join(STRATEGIES)}")
        self._watchdog: Watchdog | None = None
        if strategy == "multi-worker":
            coordinator, count, index = cluster_from_env(os.environ)
            jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPUs; GPUs use NCCL regardless
            jax.distributed.initialize(coordinator, count, index, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S)
            self._watchdog = _watchdog(index, count)
        devices = jax.devices()[:1] if strategy == "one" else jax.devices()
        processes = jax.process_count()
        self.role = WorkerRole(jax.process_index(), processes, jax.process_index() == 0)
        self.replicas = len(devices)
        self.name = "multi-worker" if processes > 1 else ("mirrored" if len(devices) > 1 else "one")
        self._distribution = keras.distribution.DataParallel(devices=devices) if len(devices) > 1 else None
        self._collective = collective if processes > 1 else contextlib.nullcontext
        self._local: keras.Model | None = None
        self._local_at = -1
        self._network = "densenet121"

    def _scope(self) -> Any:
        return self._distribution.scope() if self._distribution is not None else contextlib.nullcontext()

    def build(self, image_size: int, lr: float, loss: keras.losses.Loss, mixed_precision: bool,
              start: tuple[list, list | None] | None, network: str = "densenet121") -> keras.Model:
        precision.set_mixed_precision(mixed_precision)  # bfloat16: no loss scaling
        self._network = network
        with self._scope():
            net = _compiled_model(image_size, lr, loss, network)
        if self.role.count > 1:
            with self._collective():
                start = self._start_from_chief(net, start)
        set_start(net, start)
        return net

    def _start_from_chief(self, net: keras.Model, start: tuple[list, list | None] | None) -> tuple | None:
        """The chief's start weights on every process (the others pass their own, equal-shaped, values)."""
        from jax.experimental import multihost_utils

        has = self.numbers_from_chief([float(start is not None), float(start is not None and start[1] is not None)])
        if not has[0]:
            return None
        weights = start[0] if start is not None else _placeholders(net.weights)
        weights = [np.asarray(w) for w in multihost_utils.broadcast_one_to_all(weights)]
        optimizer_values = None
        if has[1]:
            mine = start[1] if start is not None else _placeholders(net.optimizer.variables)
            optimizer_values = [np.asarray(v) for v in multihost_utils.broadcast_one_to_all(mine)]
        return weights, optimizer_values

    def train_epoch(self, net: keras.Model, source: Any, image_size: int, batch_size: int, steps: int, seed: int,
                    on_step: Callable[[int, float], None] | None, jit_compile: bool) -> float:
        per_process = batch_size // self.role.count
        batches = _training_arrays(source, image_size, per_process, steps, seed, self.role.index, self.role.count)
        loss_sum = examples = 0.0
        with self._scope(), self._collective():
            for index in range(steps):
                x, y = next(batches)
                loss = float(np.asarray(net.train_on_batch(x, y)))
                count = float(len(y) * self.role.count)
                loss_sum, examples = loss_sum + loss * count, examples + count
                if on_step is not None:
                    on_step(index, loss_sum / examples)
        return loss_sum / max(examples, 1.0)

    def numbers_from_chief(self, values: list[float]) -> list[float]:
        """Exact float64 values: sent as their bytes (JAX would otherwise round them to float32)."""
        if self.role.count == 1:
            return list(values)
        from jax.experimental import multihost_utils

        raw = np.frombuffer(np.asarray(values, np.float64).tobytes(), np.uint8)
        with self._collective():
            sent = np.asarray(multihost_utils.broadcast_one_to_all(raw), np.uint8)
        return [float(v) for v in np.frombuffer(sent.tobytes(), np.float64)]

    def any_worker(self, flag: bool) -> bool:
        if self.role.count == 1:
            return flag
        from jax.experimental import multihost_utils

        with self._collective():
            flags = np.asarray(multihost_utils.process_allgather(np.asarray([int(flag)], np.int32)))
        return bool(flags.sum() > 0)

    def predictor(self, net: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: model_lib.inference_function(self.local_model(net))(np.asarray(x, np.float32))[1]

    def local_model(self, net: keras.Model) -> keras.Model:
        """``net`` itself in one process; with several, a local copy refreshed when the optimizer has stepped."""
        if self.role.count == 1:
            return net
        step = self.optimizer_iterations(net)
        if self._local is None:
            self._local = _compiled_model(model_lib.input_size(net), 1e-4, net.loss, self._network)
        if self._local_at != step:
            pairs = zip([*self._local.weights, *self._local.optimizer.variables],
                        [*net.weights, *net.optimizer.variables], strict=True)
            for local, shared in pairs:
                local.assign(_local_value(shared))
            self._local_at = step
        return self._local

    def optimizer_iterations(self, net: keras.Model) -> int:
        return int(_local_value(net.optimizer.iterations))

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
        precision.set_mixed_precision(False)


def cluster_from_env(env: Any) -> tuple[str, int, int]:
    """``(coordinator, processes, process)`` from the `ENV` variables, or a one-line `InputError`."""
    missing = [name for name in ENV.values() if not env.get(name)]
    if missing:
        raise InputError(f"`strategy` multi-worker on JAX needs {', '.join(missing)}; {ENV_HINT}")
    coordinator = env[ENV["coordinator"]]
    if ":" not in coordinator:
        raise InputError(f"{ENV['coordinator']} {coordinator!r} is not host:port; {ENV_HINT}")
    try:
        count, index = int(env[ENV["processes"]]), int(env[ENV["process"]])
    except ValueError:
        raise InputError(f"{ENV['processes']} and {ENV['process']} must be whole numbers; {ENV_HINT}") from None
    if count < 1 or not 0 <= index < count:
        raise InputError(f"{ENV['process']} {index} of {ENV['processes']} {count}: use 0 to {count - 1}, one each")
    return coordinator, count, index


def _compiled_model(image_size: int, lr: float, loss: keras.losses.Loss, network: str) -> keras.Model:
    net = model_lib.build(image_size, "none", network)
    optimizer = keras.optimizers.Adam(learning_rate=lr)
    net.compile(optimizer=optimizer, loss=loss)  # so that checkpoints carry the optimizer state
    optimizer.build(net.trainable_variables)
    return net


def _placeholders(variables: list[Any]) -> list[np.ndarray]:
    """Zeros shaped like ``variables``: what a non-chief sends into a broadcast from the chief."""
    return [np.zeros(tuple(v.shape), np.dtype(v.dtype)) for v in variables]


def _local_value(variable: Any) -> np.ndarray:
    """A variable's value as this process holds it (replicated variables: every shard is the whole value)."""
    value = getattr(variable, "value", variable)
    shards = getattr(value, "addressable_shards", None)
    return np.asarray(shards[0].data if shards else value)


def _training_arrays(source: Any, image_size: int, batch_size: int, steps: int, seed: int, worker: int,
                     workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """NumPy training batches of this process's shards, no TensorFlow: ``seed`` is already the epoch's seed, so
    these are exactly the batches TensorFlow's `training_batches` would give for it (epoch 0 of that seed)."""
    from pipeline.data import input_pipeline

    return input_pipeline.training_arrays(source, image_size, batch_size, steps, seed, 0, worker, workers)


def _watchdog(index: int, count: int) -> Watchdog:
    """The watchdog on jax.distributed's key-value store (its client's own set and non-blocking get)."""
    from jax._src import distributed

    client = distributed.global_state.client
    return Watchdog(lambda key, value: client.key_value_set(key, value, allow_overwrite=True),
                    client.key_value_try_get, index, count)
