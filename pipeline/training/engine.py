"""What the epoch loop needs from a backend: the worker role, building the model, one epoch, broadcasts.

`pipeline.training.loop` is written once against `Engine`; `make_engine` picks the implementation of the
Keras backend the process runs (``KERAS_BACKEND``, fixed when Keras is first imported):

- TensorFlow (`pipeline.training.tf_engine`): today's custom step under a `tf.distribute` strategy, with
  TensorFlow's fused BatchNormalization (faster on CPUs and GPUs, `pipeline.networks.batchnorm`).
- JAX (`pipeline.training.jax_engine`): Keras's own ``train_on_batch`` under `keras.distribution.DataParallel`,
  one process per machine joined by `jax.distributed`.

Both read the same data, write the same run folder and save the same ``.keras`` checkpoints, which load under
either backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import keras
    import numpy as np

    from pipeline.data.input_pipeline import Source

STRATEGIES = ("auto", "one", "mirrored", "multi-worker")


@dataclass(frozen=True)
class WorkerRole:
    """This process's place among the workers: ``index`` of ``count``; the chief writes the run folder."""

    index: int
    count: int
    is_chief: bool


class Engine(Protocol):
    """One backend's training machinery. Methods marked collective must be called by every worker in turn."""

    name: str  # the strategy's name in config.json: one, mirrored or multi-worker
    replicas: int  # devices over all workers; the global batch is divided among them
    role: WorkerRole

    def build(
        self, image_size: int, lr: float, loss: keras.losses.Loss, mixed_precision: bool,
        start: tuple[list[np.ndarray], list[np.ndarray] | None] | None, network: str,
    ) -> keras.Model:
        """Collective: the compiled model with its built optimizer, holding the chief's ``start`` weights."""

    def train_epoch(
        self, net: keras.Model, source: Source, image_size: int, batch_size: int, steps: int, seed: int,
        on_step: Callable[[int, float], None] | None, jit_compile: bool,
    ) -> float:
        """Collective: ``steps`` global steps on this worker's shards; the epoch's per-example mean loss."""

    def numbers_from_chief(self, values: list[float]) -> list[float]:
        """Collective: the chief's ``values`` on every worker."""

    def any_worker(self, flag: bool) -> bool:
        """Collective: whether ``flag`` is true on any worker."""

    def predictor(self, net: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
        """Chief only: probabilities of a batch, in inference mode, without collectives."""

    def local_model(self, net: keras.Model) -> keras.Model:
        """Chief only: ``net`` (or a copy of it) whose weights and optimizer state this process can save."""

    def optimizer_iterations(self, net: keras.Model) -> int:
        """The optimizer's step count."""

    def close(self) -> None:
        """Undo global settings (distribution, policies) so that what runs next in the process is unaffected."""


def set_start(net: keras.Model, start: tuple[list[np.ndarray], list[np.ndarray] | None] | None) -> None:
    """Set the weights (and optimizer state) training starts from, if any."""
    if start is None:
        return
    weights, optimizer_values = start
    net.set_weights(weights)
    for variable, value in zip(net.optimizer.variables, optimizer_values or [], strict=bool(optimizer_values)):
        variable.assign(value)


def make_engine(strategy: Any = "auto") -> Engine:
    """The engine of this process's Keras backend for ``strategy`` (a name of `STRATEGIES`, or a tf strategy).

    ``multi-worker`` under TensorFlow reads ``TF_CONFIG``; under JAX, the variables of
    `pipeline.training.jax_engine.ENV` (docs/distributed.md). Make the engine before any other work of the
    process: both start the process's collective runtime.
    """
    import keras

    from pipeline.core.errors import InputError

    backend = keras.backend.backend()
    if backend == "tensorflow":
        from pipeline.training.tf_engine import TensorFlowEngine

        return TensorFlowEngine(strategy)
    if backend == "jax":
        from pipeline.training.jax_engine import JaxEngine

        return JaxEngine(strategy)
    raise InputError(f"KERAS_BACKEND {backend!r}: training runs on tensorflow or jax; set KERAS_BACKEND to one of them")
