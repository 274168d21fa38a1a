"""The `train` command: its flags and the call into `pipeline.train` (which owns the rest)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `train` to the top-level parser."""
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
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from pipeline import train

    train.train_from_args(args)
    return 0
