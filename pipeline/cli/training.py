"""The `prepare` and `train` commands: their flags and the calls into `data.prepare` and `training.loop`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.training.engine import STRATEGIES


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `prepare` and `train` to the top-level parser."""
    p = commands.add_parser("prepare", help="decode a label file's images once into shards of raw pixels for training")
    p.add_argument("--labels", required=True, type=Path, help="NIH Data_Entry CSV (.csv or .csv.gz) or course CSV")
    p.add_argument("--images", required=True, type=Path, help="folder holding the listed images")
    p.add_argument("--out", required=True, type=Path, help="the prepared folder (new, or one to continue)")
    p.add_argument("--image-size", required=True, type=int, help="side in pixels of the stored images, e.g. 224")
    p.add_argument("--workers", type=int, help="decoding processes (default: one per CPU core)")
    p.set_defaults(func=run_prepare)

    p = commands.add_parser("train", help="train a DenseNet121 on a label file or a prepared folder")
    p.add_argument("--train", required=True, type=Path, help="label file (with --images) or prepared folder")
    p.add_argument("--valid", required=True, type=Path, help="label file (with --images) or prepared folder")
    p.add_argument("--images", type=Path, help="image folder of the label files (not needed for prepared folders)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--image-size", type=int, default=320, help="side in pixels of the model's input")
    p.add_argument("--epochs", type=int, default=10, help="at most this many epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch, divided among all replicas")
    p.add_argument("--lr", type=float, default=1e-4, help="initial learning rate (Adam), halved on plateaus")
    p.add_argument("--weights", default="imagenet", help="imagenet, none, or a path to a Keras weights file")
    p.add_argument("--init-from", type=Path, metavar="CKPT", help="fine-tune from a .keras checkpoint of this project")
    p.add_argument("--loss", choices=["weighted", "plain"], default="weighted", help="class-weighted or plain BCE")
    p.add_argument("--patience", type=int, default=5, help="epochs without validation AUC gain before stopping")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights, shuffling and augmentation")
    p.add_argument("--resume", action="store_true", help="continue from the last complete epoch in --out")
    p.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="auto: all GPUs of this machine when there are several; multi-worker: one process per machine "
        "(TF_CONFIG on TensorFlow, JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID on JAX)",
    )
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="half-precision compute (GPUs): float16 with loss scaling on TensorFlow, bfloat16 on JAX",
    )
    p.add_argument("--network", choices=["densenet121", "tiny"], default="densenet121",
                   help="tiny: one convolution instead of DenseNet121, for smoke tests (with --weights none)")
    p.add_argument("--jit-compile", action="store_true", help="compile the training step with XLA (one device)")
    p.add_argument(
        "--no-export", dest="export", action="store_false", help="skip the ONNX export and guard statistics at the end"
    )
    p.set_defaults(func=run_train)


def run_prepare(args: argparse.Namespace) -> int:
    from pipeline.core.text import count
    from pipeline.data import prepare, prepared

    manifest = prepare.prepare(args.labels, args.images, args.out, args.image_size, workers=args.workers, log=_print)
    refused, shards = manifest.n_refused, len(manifest.shards)
    print(
        f"{args.out}: {count(manifest.n_images, 'image')} at {manifest.image_size} px in "
        f"{count(shards, 'shard')}" + (f"; {refused:,} refused (listed in {prepared.MANIFEST})" if refused else "")
    )
    for image, why in list(manifest.refused.items())[:5]:
        print(f"  refused {image}: {why}", file=sys.stderr)
    return 0


def run_train(args: argparse.Namespace) -> int:
    from pipeline.training import loop

    loop.train(
        args.train,
        args.valid,
        args.images,
        args.out,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weights=args.weights,
        init_from=args.init_from,
        loss=args.loss,
        patience=args.patience,
        seed=args.seed,
        resume=args.resume,
        strategy=args.strategy,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        network=args.network,
        export=args.export,
        log=_print,
    )
    return 0


def _print(line: str) -> None:
    print(line, flush=True)
