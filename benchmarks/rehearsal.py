"""Full-scale rehearsal: `prepare` the whole 112,120-image NIH layout and stream one training epoch from it.

Builds, under ``--root`` (default /tmp/chestxray-rehearsal, outside the repository), one symbolic link per
metadata row to a full-size NIH original (see `benchmarks.fullsize`), then, for the first 10,000 rows and for
all rows in turn: runs ``python -m pipeline prepare`` (``--workers 2``) as a child process and records its
wall time, the peak RSS of its whole process tree (parent plus decoding workers, sampled from /proc every
0.25 s) and the prepared folder's size on disk; then iterates one full training epoch
(`pipeline.data.input_pipeline.training_batches`, augmentation on) from that folder in a child process, recording
images/s and peak RSS. Results go to ``ROOT/results.json`` as they come.
Prints the ratios full / 10,000 (goal: peak memory within 20 %, i.e. flat) and the machine's load average,
since other work on the machine slows these runs. Deletes the prepared folders unless ``--keep``.
Run from the repository root: .venv/bin/python -m benchmarks.rehearsal [--root DIR] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.fullsize import REPO, TreeSampler, folder_bytes, link_layout

SMALL = 10_000


def run_tree(command: list[str], log: Path) -> tuple[float, int, float, str]:
    """Run ``command`` with its output in ``log``; return wall seconds, peak tree RSS, mean load, last line."""
    start = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        with TreeSampler(child.pid) as sampler:
            rc = child.wait()
    seconds = time.perf_counter() - start
    lines = [line for line in log.read_text().replace("\r", "\n").splitlines() if line.strip()]
    if rc != 0:
        raise SystemExit(f"{' '.join(command)} failed ({rc}):\n" + "\n".join(lines[-10:]))
    return seconds, sampler.peak, sampler.mean_load, lines[-1] if lines else ""


def epoch(folder: str, image_size: int, batch: int) -> None:
    """In a child process: one full training epoch from a prepared folder; prints a JSON line of its timings."""
    from pipeline.data import input_pipeline

    source = input_pipeline.open_source(folder)
    steps = input_pipeline.steps_per_epoch(source, batch)
    start = time.perf_counter()
    warm = None
    images = 0
    for step, (x, _) in enumerate(input_pipeline.training_batches(source, image_size, batch, steps, seed=0)):
        images += int(x.shape[0])
        if step == 9:
            warm = (time.perf_counter(), images)
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "steps": steps,
                "images": images,
                "seconds": end - start,
                "images_per_s": images / (end - start),
                "steady_images_per_s": (images - warm[1]) / (end - warm[0]) if warm else None,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/chestxray-rehearsal"))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rows", type=int, nargs="+", default=[SMALL, 0], help="row counts; 0 means all rows")
    parser.add_argument("--keep", action="store_true", help="keep the prepared folders")
    parser.add_argument("--reuse", action="store_true", help="skip `prepare` where a prepared folder is complete")
    parser.add_argument("--epoch", help=argparse.SUPPRESS)  # internal: the child process of one epoch
    args = parser.parse_args()
    if args.epoch:
        epoch(args.epoch, args.image_size, args.batch)
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
    root = args.root
    images = root / "images"
    start = time.perf_counter()
    table = link_layout(images)
    print(f"{len(table):,} links in {images} ({time.perf_counter() - start:.1f} s)")
    results: dict[tuple[int, str], dict] = {}

    def save() -> None:
        (root / "results.json").write_text(json.dumps({f"{n} {w}": r for (n, w), r in results.items()}, indent=1))

    for rows in args.rows:  # each size: prepare, then one epoch from it, so a cut-short run still has pairs
        n = rows or len(table)
        out = root / f"prepared-{n}-{args.image_size}"
        if args.reuse and (out / "manifest.json").is_file():
            print(f"prepare {n:>7,} images: reusing {out}")
        else:
            labels = root / f"labels-{n}.csv"
            table.head(n).to_csv(labels, index=False)
            shutil.rmtree(out, ignore_errors=True)
            command = [sys.executable, "-m", "pipeline", "prepare", "--labels", str(labels), "--images", str(images)]
            command += ["--out", str(out), "--image-size", str(args.image_size), "--workers", str(args.workers)]
            seconds, peak, load, last = run_tree(command, root / f"prepare-{n}.log")
            size = folder_bytes(out)
            results[n, "prepare"] = {"seconds": seconds, "peak": peak, "load": load, "bytes": size}
            save()
            print(
                f"prepare {n:>7,} images: {seconds:7.1f} s ({n / seconds:6.1f} images/s, "
                f"{n / seconds / args.workers:5.1f} per worker), peak RSS (tree) {peak / 2**20:6.0f} MiB, "
                f"disk {size / 2**20:7.1f} MiB ({size / n * 1000 / 2**20:.1f} MiB per 1,000), load {load:.2f}"
            )
            print(f"  {last}")
        command = [sys.executable, "-m", "benchmarks.rehearsal", "--epoch", str(out)]
        command += ["--image-size", str(args.image_size), "--batch", str(args.batch)]
        seconds, peak, load, last = run_tree(command, root / f"epoch-{n}.log")
        timing = json.loads(last)
        results[n, "epoch"] = {"seconds": seconds, "peak": peak, "load": load, **timing}
        save()
        steady = timing["steady_images_per_s"] or timing["images_per_s"]
        print(
            f"epoch   {n:>7,} images: {timing['steps']:,} batches of {args.batch} in {timing['seconds']:.1f} s "
            f"({timing['images_per_s']:.0f} images/s, {steady:.0f} after 10 batches), "
            f"peak RSS {peak / 2**20:.0f} MiB, load {load:.2f}"
        )
    counts = [rows or len(table) for rows in args.rows]
    if len(counts) >= 2:
        small, large = min(counts), max(counts)
        for what in ("prepare", "epoch"):
            if (large, what) not in results or (small, what) not in results:
                continue
            ratio = results[large, what]["peak"] / results[small, what]["peak"]
            verdict = "flat (goal: within 20 %)" if abs(ratio - 1) <= 0.2 else "NOT flat (goal: within 20 %)"
            print(f"{what}: peak RSS {large:,} / {small:,} images = {ratio:.2f}: {verdict}")
    if not args.keep:
        for n in counts:
            shutil.rmtree(root / f"prepared-{n}-{args.image_size}", ignore_errors=True)
    print(f"load {os.getloadavg()[0]:.2f} at end; results in {root / 'results.json'}")


if __name__ == "__main__":
    main()
