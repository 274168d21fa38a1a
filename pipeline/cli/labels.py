"""The label-file commands: `stats`, `leakage`, `split` and `audit` (no TensorFlow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.core import paths


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the label-file commands to the top-level parser."""
    p = commands.add_parser("stats", help="dataset statistics of a label file")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV (.csv or .csv.gz) or course CSV")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_stats)

    p = commands.add_parser("leakage", help="check label files pairwise for shared patients")
    p.add_argument("labels", nargs="+", type=Path, help="two or more label files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_leakage)

    p = commands.add_parser("split", help="patient-grouped, label-stratified train/valid/test split")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV (.csv or .csv.gz) or course CSV")
    p.add_argument("--out", required=True, type=Path, help="folder for the three CSVs")
    p.add_argument("--valid", type=float, default=0.1, help="share of images for validation (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="share of images for test (default 0.1)")
    p.add_argument(
        "--test-list", type=Path, metavar="LIST", help="the test part is exactly these images (e.g. the NIH test_list)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.add_argument(
        "--names",
        nargs=3,
        default=["train.csv", "valid.csv", "test.csv"],
        metavar=("TRAIN", "VALID", "TEST"),
        help="file names to write (default train.csv valid.csv test.csv)",
    )
    p.set_defaults(func=run_split)

    p = commands.add_parser("audit", help="official split versus a naive image-level split")
    p.add_argument("--metadata", type=Path, default=paths.metadata_file(), help="the full NIH Data_Entry CSV")
    p.add_argument("--train-val-list", type=Path, default=paths.train_val_list(), help="NIH's train_val_list")
    p.add_argument("--test-list", type=Path, default=paths.test_list(), help="NIH's test_list")
    p.add_argument("--seed", type=int, default=0, help="seed of the naive split")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_audit)


def run_stats(args: argparse.Namespace) -> int:
    from pipeline.data import label_files, stats

    table = label_files.load_labels(args.labels)
    summary = stats.summarize(table)
    print(json.dumps(summary, indent=2) if args.json else stats.format_summary(summary))
    return 0


def run_leakage(args: argparse.Namespace) -> int:
    from pipeline.data import label_files, leakage

    tables = {str(path): label_files.load_labels(path) for path in args.labels}
    reports = leakage.check_all_pairs(tables)
    leaking = [r for r in reports if r.leaks]
    if args.json:
        print(json.dumps({"leakage": bool(leaking), "pairs": [r.to_dict() for r in reports]}, indent=2))
    elif leaking:
        print(leakage.format_reports(leaking))
    else:
        print(f"no leakage: {len(tables)} files, {len(reports)} pairs, no patient in more than one file")
    return 1 if leaking else 0


def run_split(args: argparse.Namespace) -> int:
    from pipeline.core.text import count
    from pipeline.data import label_files, leakage

    table = label_files.load_labels(args.labels)
    parts = leakage.split(table, valid=args.valid, test=args.test, seed=args.seed, test_list=args.test_list)
    written = label_files.write_splits(parts, args.out, names=args.names)
    for name, path in written.items():
        part = parts[name]
        print(f"{name}: {count(len(part), 'image')}, {count(part['PatientId'].nunique(), 'patient')} -> {path}")
    return 0


def run_audit(args: argparse.Namespace) -> int:
    from pipeline.data import leakage

    report = leakage.audit_official_split(args.metadata, args.train_val_list, args.test_list, seed=args.seed)
    print(json.dumps(report, indent=2) if args.json else leakage.format_audit(report))
    return 0
