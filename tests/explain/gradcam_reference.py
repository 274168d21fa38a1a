"""Generic Grad-CAM with a GradientTape: the reference `pipeline.explain.gradcam.heatmaps` is tested and timed against.

The library computes all 14 maps from one forward pass (see `pipeline.explain.gradcam`); this is the textbook
version, one backward pass per finding, kept out of the library because only tests and
``benchmarks/bench_gradcam.py`` use it.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline.explain.gradcam import model_input
from pipeline.inference.serving import to_heatmap
from pipeline.networks.densenet import CAM_LAYER, HEAD_LAYER

# model -> {layer name: traced tape function}; traced for the reason in `pipeline.networks.densenet.inference_function`.
_TAPES: weakref.WeakKeyDictionary[keras.Model, dict[str, Callable[..., Any]]] = weakref.WeakKeyDictionary()


def gradcam_tape(model: keras.Model, image: np.ndarray, class_index: int, layer_name: str = CAM_LAYER) -> np.ndarray:
    """Generic Grad-CAM of one finding (gradient of its probability), H x W in [0, 1]."""
    image = np.asarray(image)
    features, gradients = _tape_function(model, layer_name)(model_input(model, image), tf.constant(class_index))
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2))  # 1 x channels
    cam = tf.nn.relu(tf.einsum("bijc,bc->bij", features, channel_weights))[0]
    return to_heatmap(cam.numpy(), image.shape)


def _tape_function(model: keras.Model, layer_name: str) -> Callable[..., Any]:
    """A cached, traced ``f(x, class_index) -> (features, d probability / d features)`` of one layer."""
    functions = _TAPES.setdefault(model, {})
    if layer_name not in functions:
        submodel = keras.Model(model.input, [model.get_layer(layer_name).output, model.get_layer(HEAD_LAYER).output])
        specs = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32), tf.TensorSpec((), tf.int32)]

        @tf.function(input_signature=specs)
        def features_and_gradients(x, class_index):
            with tf.GradientTape() as tape:
                features, probabilities = submodel(x, training=False)
                score = probabilities[:, class_index]
            return features, tape.gradient(score, features)

        functions[layer_name] = features_and_gradients
    return functions[layer_name]
