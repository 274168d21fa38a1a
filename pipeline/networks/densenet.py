"""DenseNet121 for the 14 findings, with its preprocessing and finding names inside the saved model.

The model takes the raw grayscale image (``size x size x 1``, values 0..255). Copying it to three
channels and the ImageNet normalisation of `keras.applications.densenet.preprocess_input` are layers of
the model, and the finding names live in the config of an identity layer on the output, so a ``.keras``
checkpoint is all that training, evaluation, the CLI and the app need to agree on how to read an image.
The backbone is built on the preprocessed tensor (not nested as one layer), so its last activation,
``relu``, the Grad-CAM target, is ``model.get_layer("relu")``.
"""

from __future__ import annotations

import functools
import os
import threading
import urllib.request
import warnings
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import keras
import numpy as np

from pipeline.core.errors import InputError, reason
from pipeline.core.findings import FINDINGS

# Keras and urllib messages alone can be cryptic: keep the exception's type name.
_why = functools.partial(reason, limit=153, typed=True)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAM_LAYER = "relu"  # DenseNet121's last activation: 1024 feature maps at 1/32 of the input size
HEAD_LAYER = "predictions"  # the dense sigmoid head (a layer name; predictions.csv is `pipeline.evaluation.results`)
MIN_SIZE = 32  # DenseNet121's smallest input
NETWORKS = ("densenet121", "tiny")  # tiny: one convolution block, for smoke tests of the code around the model

IMAGENET_FILE = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = f"https://storage.googleapis.com/tensorflow/keras-applications/densenet/{IMAGENET_FILE}"
IMAGENET_MD5 = "30ee3e1110167f948a6b9946edeeb738"
PROBE_TIMEOUT_S = 10.0
OFFLINE_HINT = "offline, use `weights` none (random init) or `weights` PATH (a local DenseNet121 notop .h5 file)"

# model -> its traced inference function. The function holds a sub-model, never the model itself, so a
# discarded model (weak key) frees its trace. The lock makes check-then-trace atomic: the app shares one
# cached model between the threads of its sessions.
_INFERENCE: weakref.WeakKeyDictionary[keras.Model, Callable[[Any], Any]] = weakref.WeakKeyDictionary()
_INFERENCE_LOCK = threading.Lock()


@keras.saving.register_keras_serializable(package="pipeline")
class FindingNames(keras.layers.Layer):
    """Identity layer whose config carries the names of the output columns, so they travel with the model."""

    def __init__(self, names: list[str] | tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = [str(name) for name in names]

    def call(self, inputs: Any) -> Any:
        return inputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "names": self.names}


def build(image_size: int = 320, weights: str | os.PathLike[str] = "none", network: str = "densenet121") -> keras.Model:
    """Uncompiled DenseNet121 with a 14-way sigmoid head on raw ``image_size x image_size x 1`` images.

    ``network`` ``"tiny"`` swaps the backbone for one convolution, BatchNormalization and ``relu``: the same
    preprocessing, Grad-CAM layer, head and finding names, so training, evaluation and serving run their
    whole code in seconds (tests, smoke runs); it takes ``weights`` none only.

    Under the TensorFlow backend its BatchNormalization layers train on TensorFlow's fused kernel
    (`pipeline.networks.batchnorm.set_fused`); under JAX they are Keras's own.

    Parameters
    ----------
    image_size
        Side of the square input in pixels (at least 32).
    weights
        ``"imagenet"`` (downloaded once into the Keras cache), ``"none"`` (random init), or the path of a
        DenseNet121 ``include_top=False`` weights file (``.h5`` as Keras downloads it, or ``.weights.h5``).
    """
    if image_size < MIN_SIZE:
        raise InputError(f"`image_size` {image_size}: DenseNet121 needs at least {MIN_SIZE} px")
    if network not in NETWORKS:
        raise InputError(f"`network` {network!r}: unknown; use one of {', '.join(NETWORKS)}")
    if network == "tiny" and os.fspath(weights) != "none":
        raise InputError(f"`network` tiny starts from random weights; use `weights` none, not {os.fspath(weights)}")
    weights_file = _weights_file(weights)  # before the slow build, so a bad option fails fast

    inputs = keras.Input(shape=(image_size, image_size, 1), name="image")
    x = keras.layers.Concatenate(name="gray_to_rgb")([inputs, inputs, inputs])
    x = keras.layers.Rescaling(1 / 255, name="to_unit_range")(x)
    variance = [std**2 for std in IMAGENET_STD]
    x = keras.layers.Normalization(mean=list(IMAGENET_MEAN), variance=variance, name="imagenet_normalization")(x)
    if network == "tiny":
        x = keras.layers.Conv2D(16, 3, strides=4, use_bias=False, name="conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1.001e-5, name="bn")(x)
        features = keras.layers.ReLU(name=CAM_LAYER)(x)
    else:
        backbone = keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x)
        if weights_file is not None:
            _load_backbone_weights(backbone, weights_file)
        features = backbone.output
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    # float32 head under any global policy: with mixed_float16 the sigmoid and the loss stay in float32.
    x = keras.layers.Dense(len(FINDINGS), activation="sigmoid", name=HEAD_LAYER, dtype="float32")(x)
    outputs = FindingNames(FINDINGS, name="findings", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=f"{network}_chestxray14")
    if keras.backend.backend() == "tensorflow":
        from pipeline.networks import batchnorm

        batchnorm.set_fused(model)  # trains ~1.2x faster on a CPU; a saved file is unchanged (networks.batchnorm)
    return model


def finding_names(model: keras.Model) -> list[str]:
    """The finding names of the output columns, in order, as stored by `build`."""
    for layer in model.layers:
        if isinstance(layer, FindingNames):
            return list(layer.names)
    raise InputError(f"model {model.name!r} has no finding names; use a checkpoint made by `python -m pipeline train`")


def input_size(model: keras.Model) -> int:
    """Side in pixels of the square grayscale image the model takes."""
    return int(model.input_shape[1])


def inference_function(model: keras.Model) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    """``f(x) -> (relu feature maps, probabilities)`` as NumPy arrays: `model` in inference mode, compiled once.

    Eager calls of DenseNet121's ~430 layers cost far more than their arithmetic on a CPU (about 15x at
    224 px), and `model.predict` has a large fixed cost per call; compiling once per model (seconds) avoids
    both: a tf.function under TensorFlow, a ``jax.jit`` of the stateless call under JAX (which reads the
    variables at each call, as the tf.function does). ``x`` is a float32 ``[batch, size, size, 1]`` array of
    any batch size. The feature maps come at no extra cost and give Grad-CAM, so predictions and heatmaps
    share the one compiled function.
    """
    with _INFERENCE_LOCK:
        function = _INFERENCE.get(model)
        if function is None:
            outputs = [model.get_layer(CAM_LAYER).output, model.get_layer(HEAD_LAYER).output]
            submodel = keras.Model(model.input, outputs)
            function = _compiled(submodel, model.input_shape[1:])
            _INFERENCE[model] = function
    return function


def _compiled(submodel: keras.Model, shape: tuple[int, ...]) -> Callable[[Any], tuple[np.ndarray, np.ndarray]]:
    if keras.backend.backend() == "jax":
        import jax

        @jax.jit
        def forward(trainable: list[Any], non_trainable: list[Any], x: Any) -> Any:
            outputs, _ = submodel.stateless_call(trainable, non_trainable, x, training=False)
            return outputs

        def run_jax(x: Any) -> tuple[np.ndarray, np.ndarray]:
            trainable = [v.value for v in submodel.trainable_variables]
            non_trainable = [v.value for v in submodel.non_trainable_variables]
            features, probabilities = forward(trainable, non_trainable, np.asarray(x, np.float32))
            return np.asarray(features, np.float32), np.asarray(probabilities, np.float32)

        return run_jax
    import tensorflow as tf

    spec = tf.TensorSpec((None, *shape), tf.float32)
    traced = tf.function(lambda x: tuple(submodel(x, training=False)), input_signature=[spec])

    def run_tf(x: Any) -> tuple[np.ndarray, np.ndarray]:
        features, probabilities = traced(x)
        return features.numpy(), probabilities.numpy()

    return run_tf


def save(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Write a ``.keras`` file atomically: a crash mid-save never leaves a truncated checkpoint at `path`."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: a checkpoint file name must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is an atomic rename; Keras insists on the .keras suffix.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        with open(tmp, "rb") as written:  # on disk before the rename, as files.write_atomic does
            os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_for_inference(model: keras.Model, path: str | os.PathLike[str]) -> None:
    """Save only what prediction needs (no optimizer state): a third of a training checkpoint's size."""
    save(keras.Model(model.inputs, model.outputs, name=model.name), path)


def load(path: str | os.PathLike[str]) -> keras.Model:
    """Load a checkpoint written by `save`, uncompiled, refusing arbitrary code (``safe_mode=True``)."""
    path = Path(path)
    hint = "give a .keras checkpoint written by `python -m pipeline train`"
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found; {hint}")
    if path.suffix != ".keras":
        raise InputError(f"{path}: not a .keras file; {hint}")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot load the checkpoint ({_why(exc)}); {hint}") from None
    shape = tuple(model.input_shape[1:]) if isinstance(model, keras.Model) and len(model.inputs) == 1 else ()
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 1:
        raise InputError(f"{path}: not a model for square grayscale images; {hint}")
    names = finding_names(model)
    if model.output_shape[-1] != len(names):
        raise InputError(f"{path}: {model.output_shape[-1]} outputs but {len(names)} finding names; {hint}")
    return model


def _weights_file(weights: str | os.PathLike[str]) -> str | None:
    weights = os.fspath(weights)
    if weights == "none":
        return None
    if weights == "imagenet":
        return _imagenet_file()
    if not os.path.isfile(weights):
        raise InputError(f"`weights` {weights}: no such file; use imagenet, none, or the path of a weights file")
    if not h5py.is_hdf5(weights):  # checked here so a wrong file fails before the slow build
        raise InputError(f"`weights` {weights}: not an HDF5 weights file; give a .h5 or .weights.h5 file")
    return weights


def _imagenet_file() -> str:
    """Path of the cached ImageNet DenseNet121 weights, downloading them the first time."""
    # KERAS_HOME is read now rather than at Keras import, so a caller (or a test) can point it elsewhere.
    cache_dir = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    if not os.path.isfile(os.path.join(cache_dir, "models", IMAGENET_FILE)):
        # urlretrieve in keras.utils.get_file has no timeout; a short probe keeps an offline machine from hanging.
        try:
            urllib.request.urlopen(urllib.request.Request(IMAGENET_URL, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot download the ImageNet weights ({_why(exc)}); {OFFLINE_HINT}") from None
    try:
        return keras.utils.get_file(
            IMAGENET_FILE, IMAGENET_URL, cache_subdir="models", file_hash=IMAGENET_MD5, cache_dir=cache_dir
        )
    except Exception as exc:
        raise InputError(f"cannot download the ImageNet weights ({_why(exc)}); {OFFLINE_HINT}") from None


def _load_backbone_weights(backbone: keras.Model, weights_file: str) -> None:
    # The preprocessing layers in front of the backbone have no weights, so both the legacy .h5 (matched by
    # order) and the .weights.h5 (matched by layer type and count) formats of a plain DenseNet121 fit it.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone.load_weights(weights_file)
    except Exception as exc:
        why = _why(exc)
        raise InputError(
            f"`weights` {weights_file}: not DenseNet121 include_top=False weights ({why}); "
            "use a .h5 or .weights.h5 file saved from keras.applications.DenseNet121(include_top=False)"
        ) from None

