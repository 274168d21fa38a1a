"""Probabilities of the 14 findings for images, and the `python -m pipeline predict` command.

Images are decoded by `pipeline.imaging.load_image` and resized with `pipeline.imaging.resize` to the
checkpoint's input size; everything else (channels, normalisation) happens inside the model. The command
answers from the checkpoint's export (`pipeline.serving`) when there is a current one, so it imports
TensorFlow only when there is not, and marks images the run's guard (`pipeline.ood`) flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np

from pipeline import gradcam, imaging, ood, serving
from pipeline.errors import InputError

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


def predict_images(model: keras.Model, images: Sequence[np.ndarray]) -> np.ndarray:
    """Probabilities ``[len(images), n_findings]`` of H x W grayscale images (any size; resized here)."""
    from pipeline import model as model_lib

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
    from pipeline import model as model_lib

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
    ``{"image": path, "probabilities": {finding: p}, "in_distribution": bool, "typicality": t}`` (plus
    ``"ood_reason"`` when not in distribution and ``"gradcam": {finding: png}`` with ``--gradcam``).
    ``--gradcam DIR`` writes ``DIR/<name>_<finding>.png`` overlays of the ``--top`` most probable findings,
    with names made unique across the batch (`overlay_stems`). Returns 0 when every image was predicted,
    2 when some could not be read (each reason is on stderr and the readable images are still predicted).
    """
    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    predictor = serving.load_predictor(args.checkpoint)
    stats = ood.load(Path(args.checkpoint).parent)
    names = predictor.names
    if args.gradcam is not None:
        try:
            args.gradcam.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--gradcam {args.gradcam}: cannot create the folder ({exc.strerror})") from None

    failed = 0
    for path, stem in zip(args.images, overlay_stems(args.images), strict=True):
        try:
            decoded = imaging.load_decoded(path)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        answer = serving.analyse(predictor, stats, [decoded])[0]
        overlays: dict[str, str] = {}
        if args.gradcam is not None:
            gray = imaging.to_gray(decoded)
            for k in np.argsort(-answer.probabilities, kind="stable")[: args.top]:
                out = args.gradcam / f"{stem}_{names[k]}.png"
                _write_png(out, gradcam.overlay(gray, answer.heatmaps[k]))
                overlays[names[k]] = str(out)
        print(_format(path, names, answer.probabilities, overlays, args.json, answer.verdict), flush=True)
    return 2 if failed else 0


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


def _forward(model: keras.Model, images: list[np.ndarray]) -> np.ndarray:
    from pipeline import model as model_lib

    x = np.stack(images)[..., np.newaxis].astype(np.float32)
    _, probabilities = model_lib.inference_function(model)(x)
    return probabilities.numpy().astype(np.float32)


def _empty(model: keras.Model) -> np.ndarray:
    return np.zeros((0, model.output_shape[-1]), dtype=np.float32)


def _format(
    path: Path, names: list[str], probabilities: np.ndarray, overlays: dict[str, str], as_json: bool,
    verdict: ood.Verdict,
) -> str:
    if as_json:
        scores = {name: round(float(p), 6) for name, p in zip(names, probabilities, strict=True)}
        record = {"image": str(path), "probabilities": scores, "in_distribution": verdict.in_distribution,
                  "typicality": verdict.typicality}
        if not verdict.in_distribution:
            record["ood_reason"] = verdict.reason
        if overlays:
            record["gradcam"] = overlays
        return json.dumps(record)
    width = max(len(name) for name in names)
    lines = [str(path)]
    if not verdict.in_distribution:
        lines = [f"{path}  [OUT OF DISTRIBUTION: {verdict.reason}; the probabilities below are not meaningful]"]
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
