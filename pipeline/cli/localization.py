"""The `localize` command: flags, printing, exit codes; the logic is in `pipeline.explain.localization`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError


def add_commands(commands: Any) -> argparse.ArgumentParser:
    """Add ``localize`` to the subcommands of the main parser."""
    p = commands.add_parser("localize", help="Grad-CAM maps against the NIH radiologist boxes, with a baseline")
    p.add_argument("--checkpoint", required=True, type=Path, help="a .keras file, or a run folder with best.keras")
    p.add_argument("--boxes", type=Path, help="NIH BBox_List_2017.csv(.gz) (default: the one shipped with the package)")
    p.add_argument("--images", required=True, type=Path, help="folder of the boxed images, at any size")
    p.add_argument("--out", required=True, type=Path, help="folder for localization.json, the per-box CSV, a gallery")
    p.add_argument("--json", action="store_true", help="print localization.json instead of a table")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples of the images for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.set_defaults(func=run_localize)
    return p


def run_localize(args: argparse.Namespace) -> int:
    """`python -m pipeline localize`: score the maps of a checkpoint against the boxes; write the result folder."""
    from pipeline.core.paths import box_list
    from pipeline.evaluation.bootstrap import check_bootstrap
    from pipeline.explain import localization, localization_folder
    from pipeline.networks import densenet as model_lib

    check_bootstrap(args.bootstrap)  # before the model loads
    if not Path(args.images).is_dir():
        raise InputError(f"--images {args.images}: folder not found; give the folder holding the boxed images")
    model = model_lib.load(args.checkpoint)
    heatmaps_of = localization.model_heatmaps(model)
    boxes = args.boxes or _relative(box_list())
    result = localization.localize(heatmaps_of, boxes, args.images, args.bootstrap, args.seed)
    result.summary = {"checkpoint": str(args.checkpoint), **result.summary}
    written = localization_folder.write_localization(result, args.out)
    print(json.dumps(result.summary, indent=2) if args.json else localization_folder.format_summary(result.summary))
    if not args.json:
        print(f"wrote {written.name}, {localization_folder.PER_BOX} and {len(result.gallery)} overlays to {args.out}")
    return 0


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it, as the result records it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path
