"""The `predict` command: probabilities per image on stdout, Grad-CAM overlays as PNG files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.errors import InputError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `predict` to the top-level parser."""
    p = commands.add_parser("predict", help="14 probabilities (and Grad-CAM overlays) per image")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--gradcam", type=Path, metavar="DIR", help="write Grad-CAM overlays here")
    p.add_argument("--top", type=int, default=3, help="overlays for this many top findings (default 3)")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Print the probabilities of each image, optionally write Grad-CAM overlays.

    Output per image: a block of 14 ``finding  probability`` rows, or with ``--json`` one line
    ``{"image": path, "probabilities": {finding: p}}`` (plus ``"gradcam": {finding: png}`` with ``--gradcam``).
    ``--gradcam DIR`` writes ``DIR/<stem>_<finding>.png`` overlays of the ``--top`` most probable findings.
    Returns 0 when every image was predicted, 2 when some could not be read (each reason is on stderr and
    the readable images are still predicted).
    """
    from pipeline import gradcam, imaging, model, predict

    if args.top < 1:
        raise InputError(f"--top must be at least 1, got {args.top}")
    net = model.load(args.checkpoint)
    names = model.finding_names(net)
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
            probabilities = predict.predict_images(net, [image])[0]
        else:
            probabilities, maps = gradcam.heatmaps(net, image)
            for k in np.argsort(-probabilities, kind="stable")[: args.top]:
                out = args.gradcam / f"{Path(path).stem}_{names[k]}.png"
                gradcam.write_overlay(gradcam.overlay(image, maps[k]), out)
                overlays[names[k]] = str(out)
        print(_format(path, names, probabilities, overlays, as_json=args.json), flush=True)
    return 2 if failed else 0


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
