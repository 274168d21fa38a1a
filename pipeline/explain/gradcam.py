"""Grad-CAM heatmaps of all 14 findings from one forward pass, and their overlay on the X-ray.

The head is global average pooling then a dense layer, so the logit of finding ``k`` is
``z_k = sum_c w_ck * mean_ij A_ijc + b_k`` and its gradient with respect to the feature maps ``A`` of
``relu`` is the constant ``w_ck / (h*w)``. Grad-CAM's channel weights (the spatial mean of that gradient)
are therefore ``w_ck / (h*w)``, and ``ReLU(sum_c w_ck * A_c)`` (the class activation map) equals Grad-CAM
up to a positive factor. Differentiating the sigmoid probability instead of the logit multiplies the
gradient by ``p_k * (1 - p_k) > 0``, another positive per-class factor. Each map is normalised to
[0, 1], which removes these factors, so one forward pass that returns ``A`` and the probabilities gives
all 14 maps. The generic GradientTape version the tests hold this to is `tests/explain/gradcam_reference.py`.

The exported model (`pipeline.inference.serving`) returns the class activation maps themselves, and
`serving.maps_from_cams` scales them to heatmaps for both. Keras (any backend) is imported inside the
functions that take a Keras model, so `overlay` needs none.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.core.errors import InputError
from pipeline.core.files import write_bytes_atomic
from pipeline.data import imaging
from pipeline.inference.serving import maps_from_cams

if TYPE_CHECKING:
    import keras

OVERLAY_SIDE = 2048  # longest side of an overlay (`bounded`), which keeps its memory small for any accepted image


def heatmaps(model: keras.Model, image: np.ndarray, full_size: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities ``[n_findings]`` and heatmaps ``[n_findings, H, W]`` in [0, 1] at the image's own size.

    ``image`` is an H x W grayscale array (as from `pipeline.data.imaging.load_image`); it is resized to the
    model input, and the maps are resized back to H x W, or left at the model's input size when not
    ``full_size`` (small to cache; `overlay` scales them up).
    """
    import keras

    from pipeline.networks.densenet import HEAD_LAYER, inference_function, input_size

    image = np.asarray(image)
    features, probabilities = inference_function(model)(model_input(model, image))
    kernel = keras.ops.convert_to_numpy(model.get_layer(HEAD_LAYER).kernel)  # channels x findings
    cams = np.maximum(features[0] @ kernel, 0.0)  # h x w x findings
    shape = image.shape if full_size else (input_size(model),) * 2
    return probabilities[0], maps_from_cams(cams, shape)


def overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4) -> np.ndarray:
    """The image in RGB with the heatmap blended on top in the JET colormap (red = high).

    ``image`` is H x W gray or H x W x 3 RGB uint8; ``heatmap`` in [0, 1] is resized to H x W if needed.
    ``opacity`` 0 returns the image, 1 the colormap alone.
    """
    if not 0.0 <= opacity <= 1.0:
        raise InputError(f"overlay opacity must be between 0 and 1, got {opacity}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"overlay needs an H x W or H x W x 3 uint8 image, got {image.dtype} {image.shape}")
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image
    height, width = image.shape[:2]
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8)
    colors = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colors.astype(np.float32)
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def bounded(image: np.ndarray, side: int = OVERLAY_SIDE) -> np.ndarray:
    """``image`` shrunk (area average) so that its longer side is at most ``side``; smaller images as they are.

    Overlays are made on this copy: the heatmaps come from a 7 x 7 to 16 x 16 grid, so a larger overlay shows
    nothing more, and at a 50-megapixel image's own size it would cost gigabytes (float32 RGB per finding).
    """
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def write_overlay(rgb: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Write an RGB overlay (from `overlay`) as a PNG file, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise InputError(f"{path}: cannot encode the Grad-CAM overlay as PNG")
    try:
        write_bytes_atomic(encoded.tobytes(), path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the Grad-CAM overlay ({exc.strerror}); check the folder") from None


def model_input(model: keras.Model, image: np.ndarray) -> np.ndarray:
    """An H x W grayscale image as the model's float32 ``[1, size, size, 1]`` input."""
    from pipeline.networks.densenet import input_size

    if image.ndim != 2:
        raise ValueError(f"expected an H x W grayscale image, got shape {image.shape}")
    resized = imaging.resize(image, input_size(model))
    return resized[np.newaxis, :, :, np.newaxis].astype(np.float32)
