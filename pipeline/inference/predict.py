"""Probabilities of the 14 findings from a Keras checkpoint, in bulk: labelled tables, prepared folders, files.

Which module runs the model, for what:

- here (`predict_table`, `predict_prepared`, `predict_paths`, `predict_images`): probabilities only, from the
  ``.keras`` checkpoint, for many images at once: what `evaluate`, `evaluate --reference` and the tests use;
- `pipeline.inference.serving` (`load_predictor`, `analyse`): one image or a few, as the ``predict`` command
  and the Predict page answer: probabilities, Grad-CAM heatmaps and the out-of-distribution verdict from one
  forward pass of the ONNX export (the checkpoint in Keras when the export is missing or stale);
- `pipeline.explain.gradcam.heatmaps`: Grad-CAM maps of a Keras model (what `localize` scores);
- `pipeline.training.loop`: the validation pass of training, inside the distribution strategy.

Images are decoded by `pipeline.data.imaging.load_image` and resized with `pipeline.data.imaging.resize` to the
checkpoint's input size; everything else (channels, normalisation) happens inside the model. Keras and its
backend are imported (through `pipeline.networks.densenet`) only inside the functions that run the model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items
from pipeline.core.findings import FINDINGS
from pipeline.data import imaging

if TYPE_CHECKING:
    import keras

BATCH_SIZE = 16


class Predictions(NamedTuple):
    """What `predict_paths` returns; unpacks as ``probabilities, paths, errors = predict_paths(...)``.

    Attributes
    ----------
    probabilities
        ``[len(paths), n_findings]`` float32; row ``i`` belongs to ``paths[i]``.
    paths
        The paths that loaded, as strings, in input order.
    errors
        ``{path: one-line reason}`` for the paths that did not load.
    """

    probabilities: np.ndarray
    paths: list[str]
    errors: dict[str, str]


def predict_images(net: keras.Model, images: Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities ``[len(images), n_findings]`` of H x W grayscale images (any size; resized here)."""
    from pipeline.networks import densenet

    size = densenet.input_size(net)
    resized = [imaging.resize(np.asarray(image), size) for image in images]
    batches = [_forward(net, resized[i : i + BATCH_SIZE]) for i in range(0, len(resized), BATCH_SIZE)]
    return np.concatenate(batches) if batches else _empty(net)


def predict_paths(
    net: keras.Model, paths: Iterable[str | os.PathLike[str]], batch_size: int = BATCH_SIZE
) -> Predictions:
    """Load, resize and predict image files in batches; unreadable files are reported, not raised.

    Only one batch of images is held in memory at a time, so a whole test set can be predicted.
    """
    from pipeline.networks import densenet

    size = densenet.input_size(net)
    batch: list[np.ndarray] = []
    results: list[np.ndarray] = []
    ok: list[str] = []
    errors: dict[str, str] = {}
    for path in paths:
        try:
            image = imaging.load_image(path)
        except InputError as exc:
            errors[os.fspath(path)] = str(exc)
            continue
        batch.append(imaging.resize(image, size))
        ok.append(os.fspath(path))
        if len(batch) == batch_size:
            results.append(_forward(net, batch))
            batch = []
    if batch:
        results.append(_forward(net, batch))
    probabilities = np.concatenate(results) if results else _empty(net)
    return Predictions(probabilities, ok, errors)


def predict_table(
    net: keras.Model, labels: pd.DataFrame, images_dir: str | os.PathLike[str]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Predict the images of a label table (`pipeline.data.label_files.load_labels`) found in ``images_dir``.

    Returns
    -------
    predictions, skipped
        ``Image`` and the 14 probabilities of the images that could be read, and ``{image: reason}`` for the
        others.
    """
    from pipeline.networks import densenet

    names = densenet.finding_names(net)
    if sorted(names) != sorted(FINDINGS):
        raise InputError(
            f"the checkpoint predicts {first_items(names)}, not the 14 NIH findings; use a model from train"
        )
    paths = [os.fspath(Path(images_dir) / image) for image in labels["Image"]]
    image_of = dict(zip(paths, labels["Image"], strict=True))
    result = predict_paths(net, paths)
    table = pd.DataFrame(result.probabilities.astype(np.float64), columns=names)[list(FINDINGS)]
    table.insert(0, "Image", [image_of[path] for path in result.paths])
    return table, {image_of[path]: why for path, why in result.errors.items()}


def predict_prepared(net: keras.Model, source: Any) -> pd.DataFrame:
    """``Image`` and the 14 probabilities of every image of a prepared folder (`pipeline.data.input_pipeline.Source`).

    The images are read at the model's input size: as stored when the folder was prepared at that size,
    else resized from the stored size by `pipeline.data.imaging.resize` (close to, not exactly, resizing the original).
    """
    from pipeline.data import input_pipeline
    from pipeline.networks import densenet

    size = densenet.input_size(net)
    if size > source.prepared_size:
        raise InputError(
            f"{source.name} was prepared at {source.prepared_size} px, but the checkpoint takes {size} px images; "
            f"prepare the images again at {size} px"
        )
    names = densenet.finding_names(net)
    infer = densenet.inference_function(net)
    batches = input_pipeline.evaluation_arrays(source, size, BATCH_SIZE * 4)
    rows = [infer(np.asarray(x))[1] for x, _ in batches]
    probabilities = np.concatenate(rows) if rows else _empty(net)
    table = pd.DataFrame(probabilities.astype(np.float64), columns=names)[list(FINDINGS)]
    table.insert(0, "Image", source.table["Image"].to_numpy())
    return table


def overlay_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """A distinct file-name stem per path: the file's stem, prefixed by its folders where stems collide."""
    parts = [Path(os.path.abspath(path)).with_suffix("").parts for path in paths]
    depth = [1] * len(parts)
    while True:
        stems = ["_".join(p[-d:]).lstrip("_/") for p, d in zip(parts, depth, strict=True)]
        clashes = {stem for stem in stems if stems.count(stem) > 1}
        grow = [i for i, stem in enumerate(stems) if stem in clashes and depth[i] < len(parts[i])]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
    seen: dict[str, int] = {}
    unique = []
    for stem in stems:  # the same path given twice: number the repeats
        seen[stem] = seen.get(stem, 0) + 1
        unique.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return unique


def _forward(net: keras.Model, images: list[np.ndarray]) -> np.ndarray:
    from pipeline.networks import densenet

    x = np.stack(images)[..., np.newaxis].astype(np.float32)
    _, probabilities = densenet.inference_function(net)(x)
    return probabilities.astype(np.float32)


def _empty(net: keras.Model) -> np.ndarray:
    return np.zeros((0, net.output_shape[-1]), dtype=np.float32)
