"""Probabilities of the 14 findings for images, and the `python -m pipeline predict` command.

Images are decoded by `pipeline.imaging.load_image` and resized with `pipeline.imaging.resize` to the
checkpoint's input size; everything else (channels, normalisation) happens inside the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import keras
import numpy as np

from pipeline import gradcam, imaging
from pipeline import model as model_lib
from pipeline.errors import InputError

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


def predict_images(model: keras.Model, images: Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities ``[len(images), n_findings]`` of H x W grayscale images (any size; resized here)."""
    size = model_lib.input_size(model)
    resized = [imaging.resize(np.asarray(image), size) for image in images]
    batches = [_forward(model, resized[i : i + BATCH_SIZE]) for i in range(0, len(resized), BATCH_SIZE)]
    return np.concatenate(batches) if batches else _empty(model)


def predict_paths(
    model: keras.Model, paths: Iterable[str | os.PathLike[str]], batch_size: int = BATCH_SIZE
) -> Predictions:
    """Load, resize and predict image files in batches; unreadable files are reported, not raised.

    Only one batch of images is held in memory at a time, so a whole test set can be predicted.
    """
    size = model_lib.input_size(model)
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
            results.append(_forward(model, batch))
            batch = []
    if batch:
        results.append(_forward(model, batch))
    probabilities = np.concatenate(results) if results else _empty(model)
    return Predictions(probabilities, ok, errors)


def predict_from_args(args: argparse.Namespace) -> int:
    """`python -m pipeline predict`: print the probabilities of each image, optionally write Grad-CAM overlays.

    Output per image: a block of 14 ``finding  probability`` rows, or with ``--json`` one line
    ``{"image": path, "probabilities": {finding: p}}`` (plus ``"gradcam": {finding: png}`` with ``--gradcam``).
    ``--gradcam DIR`` writes ``DIR/<stem>_<finding>.png`` overlays of the ``--top`` most probable findings.
    Returns 0 when every image was predicted, 2 when some could not be read (each reason is on stderr and
    the readable images are still predicted).
    """
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    model = model_lib.load(args.checkpoint)
    names = model_lib.finding_names(model)
    if args.gradcam is not None:
        try:
            args.gradcam.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--gradcam {args.gradcam}: cannot create the folder ({exc.strerror})") from None

    failed = 0
    for path in args.images:
        try:
            image = imaging.load_image(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        overlays: dict[str, str] = {}
        if args.gradcam is None:
            probabilities = predict_images(model, [image])[0]
        else:
            probabilities, maps = gradcam.heatmaps(model, image)
            for k in np.argsort(-probabilities, kind="stable")[: args.top]:
                out = args.gradcam / f"{Path(path).stem}_{names[k]}.png"
                _write_png(out, gradcam.overlay(image, maps[k]))
                overlays[names[k]] = str(out)
        print(_format(path, names, probabilities, overlays, as_json=args.json), flush=True)
    return 2 if failed else 0


def _forward(model: keras.Model, images: list[np.ndarray]) -> np.ndarray:
    x = np.stack(images)[..., np.newaxis].astype(np.float32)
    _, probabilities = model_lib.inference_function(model)(x)
    return probabilities.numpy().astype(np.float32)


def _empty(model: keras.Model) -> np.ndarray:
    return np.zeros((0, model.output_shape[-1]), dtype=np.float32)


def _format(path: Path, names: list[str], probabilities: np.ndarray, overlays: dict[str, str], as_json: bool) -> str:
    if as_json:
        scores = {name: round(float(p), 6) for name, p in zip(names, probabilities, strict=True)}
        record = {"image": str(path), "probabilities": scores}
        if overlays:
            record["gradcam"] = overlays
        return json.dumps(record)
    width = max(len(name) for name in names)
    lines = [str(path)]
    lines += [f"  {name:<{width}}  {p:6.3f}" for name, p in zip(names, probabilities, strict=True)]
    lines += [f"  Grad-CAM {name}: {out}" for name, out in overlays.items()]
    return "\n".join(lines) + "\n"


def _write_png(path: Path, rgb: np.ndarray) -> None:
    try:
        written = cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error:
        written = False
    if not written:
        raise InputError(f"{path}: cannot write the Grad-CAM overlay; check the --gradcam folder")
