"""Training-mode BatchNormalization on TensorFlow's fused kernel, without changing what a checkpoint stores.

Keras 3's ``BatchNormalization`` computes its batch statistics with ``tf.nn.moments`` and normalises with
``tf.nn.batch_normalization``: about ten element-wise ops over the activations forward and more backward,
in each of DenseNet121's 121 such layers. TensorFlow's ``FusedBatchNormV3`` (oneDNN on x86 CPUs, cuDNN on
GPUs) does the same in one op and one gradient op. Measured with benchmarks/bench_train_step.py on a shared
2-core x86 CPU: the training step of DenseNet121 runs 1.18x as fast at 224 px, batch 16 (2.69 against
3.17 s, medians of 5 alternated steps) and 1.30x at 64 px, and its first call traces faster (21 against
30 s at 64 px). Results agree with Keras's layer to float rounding (the normalised output, the gradients, and
the moving statistics, for which the kernel's Bessel-corrected batch variance is turned back into Keras's
biased one).

`set_fused` swaps the ``call`` of each layer instance, not the layer class, so a saved ``.keras`` file is
exactly what Keras's own layer writes and loads anywhere; inference (``training=False``) and every case the
kernel does not cover (masks, renorm, synchronized statistics, an axis other than the last, a rank other than
4, an epsilon below the kernel's minimum) run Keras's own code.
"""

from __future__ import annotations

import types
from typing import Any

import keras
import tensorflow as tf

MIN_EPSILON = 1.001e-5  # FusedBatchNormV3 raises any smaller epsilon to this, which would change results


def set_fused(model: keras.Model, fused: bool = True) -> int:
    """Make every BatchNormalization layer of ``model`` train on the fused kernel (or undo it); returns how many.

    Call it before the training step is traced: a traced function keeps the ops it was traced with.
    """
    count = 0
    for layer in _batch_norms(model):
        if fused:
            layer.call = types.MethodType(_fused_call, layer)
        elif "call" in vars(layer):
            del layer.call
        count += 1
    return count


def is_fused(layer: keras.layers.Layer) -> bool:
    """Whether `set_fused` swapped this layer's ``call``."""
    call = vars(layer).get("call")
    return getattr(call, "__func__", None) is _fused_call


def _batch_norms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of ``model`` and of the models nested in it."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_batch_norms(layer))
    return found


def _fused_call(self: keras.layers.BatchNormalization, inputs: Any, training: Any = None, mask: Any = None) -> Any:
    rank = len(inputs.shape)
    covered = (
        training
        and self.trainable
        and mask is None
        and rank == 4
        and self.axis in (-1, rank - 1)
        and self.scale
        and self.center
        and not self.renorm
        and not self.synchronized
        and self.epsilon >= MIN_EPSILON
    )
    if not covered:
        return keras.layers.BatchNormalization.call(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, tf.float32)  # as Keras's layer: statistics in float32 under mixed precision too
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        x,
        tf.cast(self.gamma, tf.float32),
        tf.cast(self.beta, tf.float32),
        epsilon=self.epsilon,
        is_training=True,
        data_format="NHWC",
    )
    # The kernel returns the unbiased batch variance (n / (n - 1) times the one it normalised with); Keras's
    # moving variance averages the biased one.
    n = tf.cast(tf.size(x, out_type=tf.int64) // tf.cast(tf.shape(x)[-1], tf.int64), tf.float32)
    variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
    momentum = self.momentum
    self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * momentum + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)
