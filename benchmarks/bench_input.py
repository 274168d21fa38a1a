"""Does the input pipeline feed 224 px batches >= 10x faster from a prepared folder, and >= 1.5x the model's step?
And is the TensorFlow-free path (NumPy batches from raw shards) at least as fast as the former tf.data path?

Builds, in a temporary folder, ``--images`` symbolic links to the full-size NIH originals (`benchmarks.fullsize`)
and prepares them at ``--image-size`` (untimed). Then times, at batch ``--batch`` with augmentation on:

- the image folder (`pipeline.data.input_pipeline.open_source(labels, images)`): its first epoch, which decodes every
  full-size PNG through `pipeline.data.imaging` (numpy_function, then cached in memory). That decoding epoch is what
  a run on the full data pays, since 112,120 images do not fit the cache; later epochs read the cache;
- the prepared folder: ``--steps`` batches (wrapping around its shards), from the iterator's creation, three
  ways, each ``--repeats`` times with the load beside it: the NumPy batches (`training_arrays`, no TensorFlow),
  the same batches through tf.data (`training_batches`, what the TensorFlow loop reads), and the former path
  (TFRecord shards of PNG-encoded examples decoded and augmented inside tf.data), rebuilt here from the same
  pixels as the reference it replaced;
- DenseNet121 training steps at the same image size (`pipeline.training.steps.make_train_step`, one device, plain BCE,
  batch ``--model-batch``), on a constant batch, after ``--warmup`` steps.

All three use every core of this process (tf.data and TensorFlow's thread pools), so per core is the
images/s divided by the core count, alike for all. Prints images/s, per core, and the ratios prepared /
folder (goal >= 10) and prepared / model step (goal >= 1.5: the input is never the bottleneck; on a GPU
machine the input has the CPU to itself, here both share it, so the ratio only says the input is cheap).
Run from the repository root: .venv/bin/python -m benchmarks.bench_input [--images 640] [--steps 40]
[--no-folder] [--model-steps 0] (the last two skip the slow parts)
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


def input_rate(
    source: input_pipeline.Source, image_size: int, batch: int, count: int, numpy: bool = False
) -> tuple[float, float]:
    """Seconds and images/s of ``count`` augmented training batches, from creating the iterator on."""
    start = time.perf_counter()
    images = 0
    if numpy:
        batches = input_pipeline.training_arrays(source, image_size, batch, count, seed=0, epoch=0)
    else:
        batches = input_pipeline.training_batches(source, image_size, batch, count, seed=0)
    for x, _ in batches:
        images += int(x.shape[0])
    seconds = time.perf_counter() - start
    return seconds, images / seconds


def write_former_format(source: input_pipeline.Source, folder: Path) -> list[str]:
    """The prepared images as the former format held them: TFRecord shards of PNG-encoded tf.train.Example."""
    import cv2

    folder.mkdir()
    files = []
    size = source.prepared_size
    labels = input_pipeline.label_files.label_matrix(source.table).astype(np.int64)
    rows = source.rows(size)
    for k, shard in enumerate(np.array_split(np.arange(len(rows)), len(source.shards))):
        files.append(str(folder / f"shard-{k:05d}.tfrecord"))
        with tf.io.TFRecordWriter(files[-1]) as writer:
            for index, image in zip(shard, rows.images(shard), strict=True):
                png = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                    "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels[index])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return files


def former_rate(files: list[str], image_size: int, batch: int, count: int) -> tuple[float, float]:
    """Images/s of the former tf.data path: interleaved shards, a 4096 shuffle buffer, PNG decoding and the
    stateless affine augmentation (ImageProjectiveTransformV3), all inside tf.data, as it read before."""
    features = {"image": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.FixedLenFeature([14], tf.int64)}

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, features)
        image = tf.ensure_shape(tf.io.decode_png(example["image"], channels=1), (image_size, image_size, 1))
        return image, tf.cast(example["labels"], tf.float32)

    def finish(index: tf.Tensor, pair: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = pair
        return former_augment(tf.cast(x, tf.float32), tf.stack([tf.constant(7, tf.int64), index])), y

    start = time.perf_counter()
    shards = tf.data.Dataset.from_tensor_slices(files)
    records = shards.interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE)
    examples = records.shuffle(4096, seed=0).repeat().take(count * batch).map(parse, tf.data.AUTOTUNE)
    batches = examples.batch(batch, drop_remainder=True).enumerate().map(finish, tf.data.AUTOTUNE).prefetch(2)
    images = sum(int(x.shape[0]) for x, _ in batches)
    seconds = time.perf_counter() - start
    return seconds, images / seconds


def former_augment(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The former in-graph augmentation (same ranges as `input_pipeline.augment_images`)."""
    shape = tf.shape(images)
    b, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def uniform(i: int, bound: float, centre: float = 0.0) -> tf.Tensor:
        return tf.random.stateless_uniform([b], seeds[i], centre - bound, centre + bound)

    angle = uniform(0, np.radians(input_pipeline.ROTATION_DEGREES))
    shift_x, shift_y = uniform(1, input_pipeline.SHIFT) * width, uniform(2, input_pipeline.SHIFT) * height
    zoom, contrast = uniform(3, input_pipeline.ZOOM, 1.0), uniform(4, input_pipeline.CONTRAST, 1.0)
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox, oy = cx + shift_x, cy + shift_y
    transforms = tf.stack(
        [cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy, tf.zeros([b]), tf.zeros([b])], axis=1
    )
    moved = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    mean = tf.reduce_mean(moved, axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value((moved - mean) * contrast[:, None, None, None] + mean, 0.0, 255.0)


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
    parser.add_argument("--model-steps", type=int, default=3, help="0 skips the model step")
    parser.add_argument("--no-folder", dest="folder", action="store_false", help="skip the image folder's epoch")
    parser.add_argument("--repeats", type=int, default=2, help="times each prepared-folder path is measured")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()}, {cores} CPUs, TensorFlow {tf.__version__}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp, "images")
        table = link_layout(images, args.images)
        labels = Path(tmp, "labels.csv")
        table.to_csv(labels, index=False)
        prepare.prepare(labels, images, Path(tmp, "prepared"), args.image_size, log=lambda line: None)

        folder_rate = None
        if args.folder:
            folder = input_pipeline.open_source(labels, images)
            count = input_pipeline.steps_per_epoch(folder, args.batch)
            seconds, folder_rate = input_rate(folder, args.image_size, args.batch, count)
            print(
                f"image folder, first (decoding) epoch: {count} batches in {seconds:.1f} s, {folder_rate:.1f} images/s "
                f"({folder_rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
            )
        prepared = input_pipeline.open_source(Path(tmp, "prepared"))
        former = write_former_format(prepared, Path(tmp, "former"))
        rates: dict[str, list[float]] = {"numpy": [], "tf.data": [], "former": []}
        for _ in range(args.repeats):
            for name, measure in (
                ("numpy", lambda: input_rate(prepared, args.image_size, args.batch, args.steps, numpy=True)),
                ("tf.data", lambda: input_rate(prepared, args.image_size, args.batch, args.steps)),
                ("former", lambda: former_rate(former, args.image_size, args.batch, args.steps)),
            ):
                seconds, rate = measure()
                rates[name].append(rate)
                what = {
                    "numpy": "prepared folder, NumPy batches (no TensorFlow)",
                    "tf.data": "prepared folder, the same batches through tf.data",
                    "former": "former path (TFRecord/PNG decoded and augmented in tf.data)",
                }[name]
                print(
                    f"{what}: {args.steps} batches in {seconds:.1f} s, {rate:.1f} images/s "
                    f"({rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
                )
    prepared_rate = max(rates["tf.data"])
    ratio = max(rates["numpy"]) / max(rates["former"])
    print(f"NumPy path / former tf.data path = {ratio:.2f}x (best of {args.repeats} each)")
    ratio = max(rates["tf.data"]) / max(rates["former"])
    print(f"tf.data over NumPy / former tf.data path = {ratio:.2f}x (what the TensorFlow loop reads now)")
    if folder_rate is not None:
        ratio = prepared_rate / folder_rate
        print(f"prepared / image folder = {ratio:.1f}x (goal >= 10: {'met' if ratio >= 10 else 'NOT met'})")
    if args.model_steps:
        step_rate = model_rate(args.image_size, args.model_batch, args.warmup, args.model_steps)
        print(
            f"DenseNet121 training step at {args.image_size} px, batch {args.model_batch}: {step_rate:.1f} images/s "
            f"({step_rate / cores:.1f} per core), load {os.getloadavg()[0]:.2f}"
        )
        ratio = prepared_rate / step_rate
        print(f"prepared input / model step = {ratio:.1f}x (goal >= 1.5: {'met' if ratio >= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
