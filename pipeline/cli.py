"""`python -m pipeline COMMAND`: the command line over the library.

Every command turns an `InputError` into one line on stderr and exit code 2, never a traceback.
Heavy modules (TensorFlow) are imported inside the commands that need them, so `stats` and
`leakage` start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import quiet
from pipeline.errors import InputError

# Where the embedded data lives, relative to the repository root.
REPO_ROOT = Path(__file__).resolve().parent.parent
NIH_DIR = REPO_ROOT / "nih"
METADATA = NIH_DIR / "metadata" / "Data_Entry_2017_v2020.csv.gz"
TRAIN_VAL_LIST = NIH_DIR / "metadata" / "train_val_list.txt.gz"
TEST_LIST = NIH_DIR / "metadata" / "test_list.txt.gz"


def _cmd_stats(args: argparse.Namespace) -> int:
    from pipeline import data, stats

    table = data.load_labels(args.labels)
    summary = stats.summarize(table)
    print(json.dumps(summary, indent=2) if args.json else stats.format_summary(summary))
    return 0


def _cmd_leakage(args: argparse.Namespace) -> int:
    from pipeline import data, leakage

    tables = {str(path): data.load_labels(path) for path in args.labels}
    reports = leakage.check_all_pairs(tables)
    leaking = [r for r in reports if r.leaks]
    if args.json:
        print(json.dumps({"leakage": bool(leaking), "pairs": [r.to_dict() for r in reports]}, indent=2))
    elif leaking:
        print(leakage.format_reports(leaking))
    else:
        print(f"no leakage: {len(tables)} files, {len(reports)} pairs, no patient in more than one file")
    return 1 if leaking else 0


def _cmd_split(args: argparse.Namespace) -> int:
    from pipeline import data, leakage

    table = data.load_labels(args.labels)
    parts = leakage.split(table, valid=args.valid, test=args.test, seed=args.seed)
    written = data.write_splits(parts, args.out, names=args.names)
    for name, path in written.items():
        part = parts[name]
        print(f"{name}: {len(part)} images, {part['PatientId'].nunique()} patients -> {path}")
    return 0


def _cmd_audit(args: argparse.Namespace) -> int:
    from pipeline import leakage

    report = leakage.audit_official_split(args.metadata, args.train_val_list, args.test_list, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else leakage.format_audit(report))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pipeline import train

    train.train_from_args(args)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pipeline import predict

    return predict.predict_from_args(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from pipeline import data, model, serving

    checkpoint = args.run / "best.keras"
    images = [[args.images / name for name in data.load_labels(path)["Image"]] for path in (args.train, args.valid)]
    summary = serving.add_serving_artifacts(args.run, model.load(checkpoint), images[0], images[1], checkpoint)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline import evaluate

    evaluate.evaluate_from_args(args)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from pipeline import evaluate

    return evaluate.compare_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose", action="store_true", help=f"keep TensorFlow's start-up logging (also: {quiet.VERBOSE_ENV}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("stats", help="dataset statistics of a label file")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV (.csv or .csv.gz) or course CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_stats)

    p = commands.add_parser("leakage", help="check label files pairwise for shared patients")
    p.add_argument("labels", nargs="+", type=Path, help="two or more label files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_leakage)

    p = commands.add_parser("split", help="patient-grouped, label-stratified train/valid/test split")
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="folder for the three CSVs")
    p.add_argument("--valid", type=float, default=0.1, help="share of images for validation (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="share of images for test (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--names",
        nargs=3,
        default=["train.csv", "valid.csv", "test.csv"],
        metavar=("TRAIN", "VALID", "TEST"),
        help="file names to write (default train.csv valid.csv test.csv)",
    )
    p.set_defaults(func=_cmd_split)

    p = commands.add_parser("audit", help="official split versus a naive image-level split")
    p.add_argument("--metadata", type=Path, default=METADATA)
    p.add_argument("--train-val-list", type=Path, default=TRAIN_VAL_LIST)
    p.add_argument("--test-list", type=Path, default=TEST_LIST)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_audit)

    p = commands.add_parser("train", help="train a DenseNet121 on a label file")
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--valid", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--image-size", type=int, default=320)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a path to a Keras weights file")
    p.add_argument("--loss", choices=["weighted", "plain"], default="weighted", help="class-weighted or plain BCE")
    p.add_argument("--patience", type=int, default=5, help="epochs without validation AUC gain before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")
    p.set_defaults(func=_cmd_train)

    p = commands.add_parser("predict", help="14 probabilities (and Grad-CAM overlays) per image")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--gradcam", type=Path, metavar="DIR", help="write Grad-CAM overlays here")
    p.add_argument("--top", type=int, default=3, help="overlays for this many top findings (default 3)")
    p.set_defaults(func=_cmd_predict)

    p = commands.add_parser("export", help="add the ONNX export and typicality statistics to a run")
    p.add_argument("--run", required=True, type=Path, help="run folder with best.keras")
    p.add_argument("--train", required=True, type=Path, help="the run's training labels (image names)")
    p.add_argument("--valid", required=True, type=Path, help="the run's validation labels (image names)")
    p.add_argument("--images", required=True, type=Path)
    p.set_defaults(func=_cmd_export)

    p = commands.add_parser("evaluate", help="per-finding AUC with CIs, thresholds, calibration")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path)
    source.add_argument("--predictions", type=Path, help="CSV with Image and one probability column per finding")
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--images", type=Path, help="image folder (with --checkpoint)")
    p.add_argument("--out", required=True, type=Path)
    thresholds = p.add_mutually_exclusive_group()
    thresholds.add_argument(
        "--valid-predictions", type=Path, help="an evaluation folder of the validation set: thresholds by Youden's J"
    )
    thresholds.add_argument(
        "--valid-labels", type=Path, help="validation labels: predict them too, thresholds by Youden's J (--checkpoint)"
    )
    thresholds.add_argument("--thresholds", type=Path, help="JSON {finding: threshold}")
    p.add_argument(
        "--target-sensitivity", type=float, metavar="F", help="thresholds reaching this sensitivity on validation"
    )
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_evaluate)

    p = commands.add_parser("compare", help="compare evaluations on the same images (DeLong, bootstrap)")
    p.add_argument("evals", nargs="+", type=Path)
    p.add_argument("--json", action="store_true")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet.silence_tensorflow(args.verbose)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
