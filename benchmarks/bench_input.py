"""Does the input pipeline feed 224 px batches >= 10x faster from a prepared folder, and >= 1.5x the model's step?

Builds, in a temporary folder, ``--images`` symbolic links to the full-size NIH originals (`benchmarks.fullsize`)
and prepares them at ``--image-size`` (untimed). Then times, at batch ``--batch`` with augmentation on:

- the image folder (`pipeline.data.input_pipeline.open_source(labels, images)`): its first epoch, which decodes every
  full-size PNG through `pipeline.data.imaging` (numpy_function, then cached in memory). That decoding epoch is what
  a run on the full data pays, since 112,120 images do not fit the cache; later epochs read the cache;
- the prepared folder: ``--steps`` batches (wrapping around its shards), from the iterator's creation;
- DenseNet121 training steps at the same image size (`pipeline.training.steps.make_train_step`, one device, plain BCE,
  batch ``--model-batch``), on a constant batch, after ``--warmup`` steps.

All three use every core of this process (tf.data and TensorFlow's thread pools), so per core is the
images/s divided by the core count, alike for all. Prints images/s, per core, and the ratios prepared /
folder (goal >= 10) and prepared / model step (goal >= 1.5: the input is never the bottleneck; on a GPU
machine the input has the CPU to itself, here both share it, so the ratio only says the input is cheap).
Run from the repository root: .venv/bin/python -m benchmarks.bench_input [--images 640] [--steps 40]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.fullsize import link_layout
from pipeline.core.findings import FINDINGS
from pipeline.data import input_pipeline, prepare
from pipeline.networks import densenet
from pipeline.training import steps


def input_rate(source: input_pipeline.Source, image_size: int, batch: int, count: int) -> tuple[float, float]:
    """Seconds and images/s of ``count`` augmented training batches, from creating the dataset on."""
    start = time.perf_counter()
    images = 0
    for x, _ in input_pipeline.training_batches(source, image_size, batch, count, seed=0):
        images += int(x.shape[0])
    seconds = time.perf_counter() - start
    return seconds, images / seconds


def model_rate(image_size: int, batch: int, warmup: int, timed: int) -> float:
    """Images/s of DenseNet121 training steps on a constant batch, after ``warmup`` steps (tracing included)."""
    import keras

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    net = densenet.build(image_size, weights="none")
    optimizer = keras.optimizers.Adam(1e-4)
    step = steps.make_train_step(strategy, net, keras.losses.BinaryCrossentropy(), optimizer, batch)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, image_size, image_size, 1)).astype(np.float32)
    y = (rng.random((batch, len(FINDINGS))) < 0.1).astype(np.float32)
    iterator = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((x, y)).repeat()))
    for _ in range(warmup):
        float(step(iterator)[0])
    start = time.perf_counter()
    for _ in range(timed):
        float(step(iterator)[0])
    return batch * timed / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=640, help="full-size images in the folder (one epoch)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=40, help="batches timed from the prepared folder")
    parser.add_argument("--model-batch", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model-steps", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {cores} CPUs, TensorFlow {tf.__version__}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp, "images")
        table = link_layout(images, args.images)
        labels = Path(tmp, "labels.csv")
        table.to_csv(labels, index=False)
        prepare.prepare(labels, images, Path(tmp, "prepared"), args.image_size, log=lambda line: None)

        folder = input_pipeline.open_source(labels, images)
        count = input_pipeline.steps_per_epoch(folder, args.batch)
        seconds, folder_rate = input_rate(folder, args.image_size, args.batch, count)
        print(
            f"image folder, first (decoding) epoch: {count} batches in {seconds:.1f} s, {folder_rate:.1f} images/s "
            f"({folder_rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
        )
        prepared = input_pipeline.open_source(Path(tmp, "prepared"))
        seconds, prepared_rate = input_rate(prepared, args.image_size, args.batch, args.steps)
        print(
            f"prepared folder: {args.steps} batches in {seconds:.1f} s, {prepared_rate:.1f} images/s "
            f"({prepared_rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
        )
    step_rate = model_rate(args.image_size, args.model_batch, args.warmup, args.model_steps)
    print(
        f"DenseNet121 training step at {args.image_size} px, batch {args.model_batch}: {step_rate:.1f} images/s "
        f"({step_rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
    )
    ratio = prepared_rate / folder_rate
    print(f"prepared / image folder = {ratio:.1f}x (goal >= 10: {'met' if ratio >= 10 else 'NOT met'})")
    ratio = prepared_rate / step_rate
    print(f"prepared input / model step = {ratio:.1f}x (goal >= 1.5: {'met' if ratio >= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
