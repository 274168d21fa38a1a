"""Does `prepare` decode full-size NIH images at >= 80 % of the speed of a bare decode+resize loop?

Builds, in a temporary folder, ``--images`` symbolic links (named after the first metadata rows) to the
full-size 1024 px NIH originals (`benchmarks.fullsize`) and their label file. Then, in turns (``--rounds``),
times `pipeline.data.prepare.prepare` into a new folder and a bare loop on the same files with the same number of
processes: `pipeline.data.imaging.load_image` + `pipeline.data.imaging.resize` in a spawned process pool, blocks of
`pipeline.data.prepare.BLOCK` images, nothing encoded or written. Both counts include starting their processes.
TensorFlow is imported before timing, by the parent only (as in ``python -m pipeline prepare``). Prints
images/s per process for each, and the ratio of the best times (goal: >= 0.80). Other work on the machine
slows both alike only roughly: read the load average printed with them.
Run from the repository root: .venv/bin/python -m benchmarks.bench_prepare [--images 600] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.fullsize import link_layout
from pipeline.data import imaging, prepare


def _bare_block(paths: list[str], size: int) -> int:
    for path in paths:
        imaging.resize(imaging.load_image(path), size)
    return len(paths)


def bare_seconds(paths: list[str], size: int, workers: int) -> float:
    """Wall seconds to decode and resize ``paths`` in ``workers`` spawned processes (their start included)."""
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    blocks = [paths[i : i + prepare.BLOCK] for i in range(0, len(paths), prepare.BLOCK)]
    with ProcessPoolExecutor(workers, mp_context=context, initializer=prepare._worker_init) as pool:
        done = sum(pool.map(_bare_block, blocks, [size] * len(blocks)))
    assert done == len(paths)
    return time.perf_counter() - start


def prepare_seconds(labels: Path, images: Path, out: Path, size: int, workers: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = prepare.prepare(labels, images, out, size, workers=workers, log=lambda line: None)
    seconds = time.perf_counter() - start
    assert manifest["n_refused"] == 0, manifest["refused"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600, help="links to full-size originals (metadata names)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="processes, for both sides")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import tensorflow as tf  # here, not at the top: spawned workers import this module, and must not load TF

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; TensorFlow {tf.__version__} loaded")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp, "images")
        table = link_layout(images, args.images)
        labels = Path(tmp, "labels.csv")
        table.to_csv(labels, index=False)
        paths = [os.fspath(images / name) for name in table["Image Index"]]
        n = len(paths)
        print(f"{n} full-size images ({args.image_size} px out), {args.workers} processes each side")
        bare, prepared = [], []
        for round_ in range(args.rounds):
            bare.append(bare_seconds(paths, args.image_size, args.workers))
            prepared.append(prepare_seconds(labels, images, Path(tmp, "prepared"), args.image_size, args.workers))
            print(
                f"round {round_ + 1}: bare {bare[-1]:.2f} s ({n / bare[-1] / args.workers:.1f} images/s per process), "
                f"prepare {prepared[-1]:.2f} s ({n / prepared[-1] / args.workers:.1f} images/s per process), "
                f"load {os.getloadavg()[0]:.2f}"
            )
    ratio = min(bare) / min(prepared)
    print(
        f"best: bare {n / min(bare) / args.workers:.1f}, prepare {n / min(prepared) / args.workers:.1f} images/s "
        f"per process; prepare / bare = {ratio:.2f} (goal >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
