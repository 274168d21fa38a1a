"""Mixed precision for training on either backend, and the float32 copy of a model that a run saves.

TensorFlow computes in float16 (``mixed_float16``), which needs loss scaling (`pipeline.training.steps` wraps
nothing itself: the TensorFlow engine gives it a ``LossScaleOptimizer``). JAX computes in bfloat16
(``mixed_bfloat16``): float32's exponent range, so no loss scaling, and the native half type of TPUs and of
recent NVIDIA GPUs. Either way the variables stay float32 and the model's head computes in float32
(`pipeline.networks.densenet.build`).
"""

from __future__ import annotations

import keras


def policy(enabled: bool) -> str:
    """The Keras dtype policy of a run: ``float32``, or the backend's mixed policy."""
    if not enabled:
        return "float32"
    return "mixed_float16" if keras.backend.backend() == "tensorflow" else "mixed_bfloat16"


def needs_loss_scaling(enabled: bool) -> bool:
    return policy(enabled) == "mixed_float16"


def slow_here_note(enabled: bool) -> str | None:
    """A line for a run about to compute in float16 without a GPU, where it is slower than float32, not faster.

    TensorFlow's CPU kernels for float16 convolutions are not oneDNN's: a DenseNet121 step took 4.1x as long
    as in float32 on this project's 2-core x86 machine (`benchmarks/bench_train_step.py`, 64 px).
    """
    if policy(enabled) != "mixed_float16":
        return None
    import tensorflow as tf  # the mixed_float16 policy is TensorFlow's alone

    if tf.config.list_logical_devices("GPU"):
        return None
    return (
        "note: --mixed-precision computes in float16 under TensorFlow, which on a CPU trains several times slower "
        "than float32: it pays on GPUs"
    )


def set_mixed_precision(enabled: bool) -> None:
    """Set Keras's global dtype policy (`policy`) for the models built next; ``False`` restores float32.

    Save `float32_copy` of a model trained under a mixed policy: a ``.keras`` file records each layer's policy,
    so the model itself would load computing in half precision everywhere, slowly on a CPU.
    """
    keras.mixed_precision.set_global_policy(policy(enabled))


def float32_copy(model: keras.Model) -> keras.Model:
    """A copy of a functional ``model`` with every layer computing in float32 and the same weights.

    What to save from a mixed-precision run (its variables are float32 already; only the recorded compute
    policy changes). Call it outside ``strategy.scope()``: under MultiWorkerMirroredStrategy creating
    variables in the scope is collective, and only the chief saves. The copy has no optimizer.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
