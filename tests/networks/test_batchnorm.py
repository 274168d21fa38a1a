"""`pipeline.networks.batchnorm`: the fused training kernel gives Keras's results, and checkpoints stay plain Keras."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import tensorflow as tf
from conftest import IMAGES, SMALL_SIZE

from pipeline.data import imaging
from pipeline.networks import batchnorm, densenet
from pipeline.networks.losses import WeightedBinaryCrossentropy


def _images(count: int, size: int) -> np.ndarray:
    paths = sorted(IMAGES.glob("*.png"))[:count]
    return np.stack([imaging.resize(imaging.load_image(p), size) for p in paths])[..., np.newaxis].astype(np.float32)


def _layer_pass(fused: bool, x: tf.Tensor, upstream: tf.Tensor) -> list[np.ndarray]:
    """Output, input/gamma/beta gradients and moving statistics of one BatchNormalization training call."""
    layer = keras.layers.BatchNormalization(epsilon=1.001e-5, momentum=0.9)  # DenseNet121's settings
    holder = keras.Sequential([keras.Input(x.shape[1:]), layer])
    layer.gamma.assign(np.linspace(0.5, 1.5, x.shape[-1], dtype=np.float32))
    layer.beta.assign(np.linspace(-1.0, 1.0, x.shape[-1], dtype=np.float32))
    assert batchnorm.set_fused(holder, fused) == 1
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = holder(x, training=True)
        total = tf.reduce_sum(y * upstream)
    grads = tape.gradient(total, [x, layer.gamma, layer.beta])
    return [y.numpy(), *(g.numpy() for g in grads), layer.moving_mean.numpy(), layer.moving_variance.numpy()]


def test_fused_layer_matches_keras_forward_backward_and_moving_statistics():
    """Real X-ray pixels as 3 channels of different scale: every output agrees to float32 rounding."""
    pixels = _images(4, 32)
    x = tf.constant(np.concatenate([pixels, pixels / 255.0, np.sqrt(pixels)], axis=-1))
    upstream = tf.constant(np.random.default_rng(0).normal(size=x.shape).astype(np.float32))
    names = ["output", "d input", "d gamma", "d beta", "moving mean", "moving variance"]
    keras_values, fused_values = _layer_pass(False, x, upstream), _layer_pass(True, x, upstream)
    for name, keras_value, fused_value in zip(names, keras_values, fused_values, strict=True):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-4, atol=1e-4, err_msg=name)


def test_inference_and_unfused_paths_are_keras_own(small_model):
    norms = [layer for layer in small_model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 121 and all(batchnorm.is_fused(layer) for layer in norms)  # DenseNet121's 121 BN layers
    x = _images(2, SMALL_SIZE)
    before = small_model(x, training=False).numpy()
    batchnorm.set_fused(small_model, False)
    try:
        assert not any(batchnorm.is_fused(layer) for layer in norms)
        np.testing.assert_array_equal(small_model(x, training=False).numpy(), before)
    finally:
        batchnorm.set_fused(small_model)


def _relative_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((u - v) ** 2) for u, v in zip(a, b, strict=True)) / sum(np.sum(v**2) for v in b)))


def test_model_gradients_match_keras_within_its_own_rounding():
    """DenseNet121 at 64 px, traced as training runs it: fused and Keras's BN give the same loss and gradients.

    Through 121 BN layers with 4 images (2x2 maps at the end) float32 rounding grows to about 1e-3 of the
    gradient, so the yardstick is Keras's own layers on the same batch in another order (the same sums
    rounded differently); a wrong kernel (epsilon, scale, statistics) differs far more.
    """
    x, y = _images(4, SMALL_SIZE), np.zeros((4, 14), np.float32)
    y[::2, 0] = 1.0
    loss = WeightedBinaryCrossentropy(np.full(14, 0.7), np.full(14, 0.3))
    keras.utils.set_random_seed(0)
    net = densenet.build(SMALL_SIZE, "none")

    def gradients(fused: bool, order: list[int]) -> tuple[float, list[np.ndarray]]:
        batchnorm.set_fused(net, fused)

        @tf.function
        def compute(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
            with tf.GradientTape() as tape:
                value = loss(y, net(x, training=True))
            return value, tape.gradient(value, net.trainable_variables)

        value, grads = compute(tf.constant(x[order]), tf.constant(y[order]))
        return float(value), [g.numpy() for g in grads]

    keras_loss, keras_grads = gradients(False, [0, 1, 2, 3])
    reordered_loss, reordered_grads = gradients(False, [3, 0, 1, 2])
    fused_loss, fused_grads = gradients(True, [0, 1, 2, 3])
    assert abs(fused_loss - keras_loss) < 1e-5 * abs(keras_loss)
    rounding = _relative_difference(reordered_grads, keras_grads)
    assert 0 < rounding < 0.02
    assert _relative_difference(fused_grads, keras_grads) < 4 * rounding


def test_checkpoint_holds_plain_keras_batch_normalization(small_checkpoint):
    with zipfile.ZipFile(small_checkpoint) as archive:
        config = json.loads(archive.read("config.json"))
    classes = [layer["class_name"] for layer in config["config"]["layers"]]
    assert classes.count("BatchNormalization") == 121
    assert {layer["module"] for layer in config["config"]["layers"] if layer["class_name"] == "BatchNormalization"} == {
        "keras.layers"
    }
    reloaded = densenet.load(small_checkpoint)
    norms = [layer for layer in reloaded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert type(norms[0]) is keras.layers.BatchNormalization and not batchnorm.is_fused(norms[0])
