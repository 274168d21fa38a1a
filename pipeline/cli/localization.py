"""The `localize` command and `evaluate --reference`: flags, printing, exit codes.

`add_commands` and `run_localize` make the ``localize`` command; `add_reference_argument` and
`run_reference` the ``--reference`` option of ``evaluate``. The logic is in `pipeline.explain.localization` and
`pipeline.evaluation.expert_labels`.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError


def add_commands(commands: Any) -> argparse.ArgumentParser:
    """Add ``localize`` to the subcommands of the main parser."""
    p = commands.add_parser("localize", help="Grad-CAM maps against the NIH radiologist boxes, with a baseline")
    p.add_argument("--checkpoint", required=True, type=Path, help="a .keras file, or a run folder with best.keras")
    p.add_argument("--boxes", type=Path, help="NIH BBox_List_2017.csv(.gz) (default: the one in nih/metadata)")
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
    from pipeline.explain import localization, localization_folder
    from pipeline.networks import densenet as model_lib

    if args.bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more, got {args.bootstrap}")
    if not Path(args.images).is_dir():
        raise InputError(f"--images {args.images}: folder not found; give the folder holding the boxed images")
    model = model_lib.load(args.checkpoint)
    heatmaps_of = localization.model_heatmaps(model)
    boxes = args.boxes or _relative(box_list())
    result = localization.localize(heatmaps_of, boxes, args.images, args.bootstrap, args.seed)
    result.summary = {"checkpoint": str(args.checkpoint), **result.summary}
    written = localization.write_localization(result, args.out)
    print(json.dumps(result.summary, indent=2) if args.json else localization_folder.format_summary(result.summary))
    if not args.json:
        print(f"wrote {written.name}, {localization.PER_BOX} and {len(result.gallery)} overlays to {args.out}")
    return 0


def _relative(path: Path) -> Path:
    """``path`` relative to the working directory when it lies inside it, as the result records it."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def add_reference_argument(evaluate_parser: argparse.ArgumentParser) -> None:
    """Add ``--reference`` to ``evaluate``."""
    evaluate_parser.add_argument(
        "--reference", metavar="NAME_OR_CSV",
        help="score against expert labels instead: 'google2019' (the shipped Google 2019 adjudicated labels) or "
             "a CSV in its format; only --labels images with expert labels are predicted",
    )


def run_reference(args: argparse.Namespace) -> int:
    """`evaluate --reference`: AUCs against expert and NIH labels on the same images; writes reference.json."""
    from pipeline.core.files import sha256_of, write_csv_atomic, write_json_atomic
    from pipeline.data import label_files
    from pipeline.evaluation import expert_labels, results
    from pipeline.inference import predict

    if args.bootstrap < 0:
        raise InputError(f"--bootstrap must be 0 (no intervals) or more, got {args.bootstrap}")
    if args.checkpoint is not None and args.images is None:
        raise InputError("--checkpoint needs --images DIR, the folder holding the labelled images")
    unused = [flag for flag, value in (("--valid-predictions", args.valid_predictions), ("--valid-labels",
              args.valid_labels), ("--thresholds", args.thresholds), ("--target-sensitivity", args.target_sensitivity))
              if value is not None]
    if unused:
        raise InputError(f"{unused[0]} has no part in --reference, which reports AUCs only; leave it out")
    path = expert_labels.reference_file(args.reference)
    expert = expert_labels.load_expert_labels(path)
    labels = expert_labels.with_expert_labels(label_files.load_labels(args.labels), expert)
    if labels.empty:
        raise InputError(f"{Path(args.labels).name}: none of its images has an expert label in {path.name}; "
                         "the Google 2019 labels cover 4,376 images of the official test and validation lists")
    skipped: dict[str, str] = {}
    if args.checkpoint is not None:
        from pipeline.networks import densenet as model_lib

        label_files.check_images_exist(labels, args.images, Path(args.labels).name)
        predictions, skipped = predict.predict_table(model_lib.load(args.checkpoint), labels, args.images)
    else:
        predictions = results.read_predictions(args.predictions)
    summary, per_image = expert_labels.score(labels, predictions, expert, args.bootstrap, args.seed)
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "checkpoint": str(args.checkpoint) if args.checkpoint is not None else None,
        "predictions_file": str(args.predictions) if args.predictions is not None else None,
        "labels_file": str(args.labels),
        "labels_sha256": sha256_of(args.labels),
        "reference_file": str(_relative(path)),
        "reference_sha256": sha256_of(path),
        **({"skipped_images": skipped} if skipped else {}),
        **summary,
    }
    out = Path(args.out)
    write_csv_atomic(per_image, out / expert_labels.PER_IMAGE)
    write_json_atomic(summary, out / expert_labels.RESULT)
    print(expert_labels.format_summary(summary))
    print(f"wrote {expert_labels.RESULT} and {expert_labels.PER_IMAGE} to {out}")
    return 0
