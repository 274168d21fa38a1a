"""The input pipeline: one interface over an image folder and a prepared folder, for training and evaluation.

`open_source(labels, images)` gives a `Source` either way: a label file with its image folder (small data:
images decoded by `pipeline.data.imaging` once and cached in memory, with a progress bar while that happens), or a
folder made by `pipeline.data.prepare` (any size: shards streamed from disk, PNG decoding in parallel inside
tf.data, memory independent of the number of images). Training, evaluation and the distribution
strategies all read through it.

Training batches (`training_batches`). Each epoch is one seeded pass: the shard order and a shuffle buffer
(prepared) or the whole list (folder) are shuffled from the epoch's seed, and each batch is augmented with
stateless random numbers drawn from ``(epoch seed, batch index)``, so the augmentation runs in parallel and
still reproduces exactly: the epoch number is the whole random state a resumed run needs. The augmentation
is one affine resampling per image (rotation up to 6 degrees, shifts up to 5 %, zoom up to 10 %, black fill
as on a collimated film) and a contrast change up to 10 %. **No horizontal flips**: the anatomy is
lateralised (the heart lies on the left, and dextrocardia is itself a finding), so a flipped film is not a
plausible X-ray. Augmentation lives here, not in the model, so checkpoints hold only what inference needs.

Sharding among workers. Worker ``i`` of ``n`` reads shards ``i, i+n, ...`` of a prepared folder (rows of an
image folder). Every worker must run the same number of steps (each is a collective all-reduce), so an
epoch is `steps_per_epoch` batches on every worker: a worker with fewer images wraps around to the start of
its shuffled list, never drops any.

TensorFlow (tf.data) is imported inside the functions that build datasets, so importing this module (for
`Source` and `open_source`) costs nothing and the import contract (`tests/test_layout.py`) holds.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, reason
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.data import imaging, label_files, prepare

if TYPE_CHECKING:
    import tensorflow as tf

ROTATION_DEGREES = 6.0
SHIFT = 0.05
ZOOM = 0.10
CONTRAST = 0.10
SHUFFLE_BUFFER = 4096  # prepared data: encoded images held for shuffling (~40 KB each at 224 px)
INTERLEAVE = 8  # prepared data: shards read at once


@dataclass(frozen=True)
class Source:
    """A labelled image set: a label file with its image folder, or a prepared folder.

    Attributes
    ----------
    table
        Canonical labels (`pipeline.data.label_files.load_labels`) of the images the source yields, in its order.
    name
        For messages: the label file's or the prepared folder's name.
    sha256
        Hash of the labels: the label file's bytes, or the prepared folder's ``labels.csv``.
    path
        The label file or the prepared folder.
    images_dir
        The image folder (None for a prepared folder).
    prepared_size
        The side the images were prepared at (None for an image folder).
    """

    table: pd.DataFrame
    name: str
    sha256: str
    path: Path
    images_dir: Path | None = None
    prepared_size: int | None = None
    shards: tuple[tuple[str, int], ...] = ()  # (file, images) of a prepared folder
    n_refused: int = 0  # listed images `prepare` could not read (a prepared folder)

    @property
    def prepared(self) -> bool:
        return self.prepared_size is not None

    def __len__(self) -> int:
        return len(self.table)

    def shard_sizes(self, workers: int = 1) -> list[int]:
        """Images each of ``workers`` workers reads (shards, or rows, dealt round-robin)."""
        if self.prepared and workers > len(self.shards):
            raise InputError(
                f"{self.name} has {len(self.shards)} shards, fewer than the {workers} workers; "
                "use fewer workers, or prepare it again (it makes at least 16 shards when there are 16 images)"
            )
        if self.prepared:
            return [sum(images for _, images in self.shards[i::workers]) for i in range(workers)]
        return [len(range(i, len(self.table), workers)) for i in range(workers)]

    def images(self, image_size: int, worker: int = 0, workers: int = 1) -> tf.data.Dataset:
        """``(uint8 image [size, size, 1], float32 labels [14])`` in the source's order, no augmentation.

        For an image folder this decodes (and caches) the images; call `fill_cache` first to see progress and
        to get a bad file's one-line error before training starts.
        """
        import tensorflow as tf

        check_size(self, image_size)
        if self.prepared:
            files = [os.fspath(self.path / file) for file, _ in self.shards[worker::workers]]
            records = tf.data.TFRecordDataset(files, num_parallel_reads=None)
            return records.map(_parser(self.prepared_size, image_size), num_parallel_calls=tf.data.AUTOTUNE)
        return _decoded(self.table.iloc[worker::workers], self.images_dir, image_size)


def open_source(labels: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None) -> Source:
    """A prepared folder (``labels`` is a folder with a manifest) or a label file with its image folder.

    Raises
    ------
    InputError
        A label file without an image folder, a listed image missing from it, or a damaged prepared folder.
    """
    path = Path(labels)
    if path.is_dir():
        if not prepare.is_prepared(path):
            raise InputError(
                f"{path}: a folder without {prepare.MANIFEST}; give a label file, or a folder made by `prepare`"
            )
        return _open_prepared(path)
    if images_dir is None:
        raise InputError(f"{path.name}: a label file needs its image folder (`images_dir`); or give a prepared folder")
    table = label_files.load_labels(path, images_dir)
    from pipeline.core.files import sha256_of

    return Source(table, path.name, sha256_of(path), path, images_dir=Path(images_dir))


def check_size(source: Source, image_size: int) -> None:
    """Refuse to read a prepared folder at a larger size than it was prepared at (it would only blur)."""
    if source.prepared and image_size > source.prepared_size:
        raise InputError(
            f"{source.name} was prepared at {source.prepared_size} px, smaller than `image_size` {image_size}; "
            f"use `image_size` {source.prepared_size} or less, or prepare the images again at {image_size}"
        )


def steps_per_epoch(source: Source, global_batch: int, workers: int = 1) -> int:
    """Batches per epoch on every worker: enough for the worker with the most images to see each of them once."""
    per_worker = global_batch // workers
    return max(math.ceil(size / per_worker) for size in source.shard_sizes(workers))


def training_batches(
    source: Source,
    image_size: int,
    batch_size: int,
    steps: int,
    seed: int,
    *,
    worker: int = 0,
    workers: int = 1,
    augment: bool = True,
) -> tf.data.Dataset:
    """One epoch of exactly ``steps`` shuffled, augmented ``(float32 [b, size, size, 1], float32 [b, 14])`` batches.

    ``batch_size`` is this input pipeline's batch (the global batch divided among the replicas it feeds);
    every draw of randomness comes from ``seed``.
    """
    import tensorflow as tf

    check_size(source, image_size)
    # Shuffle and augmentation draws differ by worker (each has other images), and reproduce per worker.
    shuffle_seed, augment_seed = (int(s) for s in np.random.SeedSequence([seed, worker]).generate_state(2) % 2**31)
    if source.prepared:
        files = [os.fspath(source.path / file) for file, _ in source.shards[worker::workers]]
        order = np.random.default_rng(shuffle_seed).permutation(len(files))
        shards = tf.data.Dataset.from_tensor_slices([files[i] for i in order])
        records = shards.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(INTERLEAVE, len(files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        size = source.shard_sizes(workers)[worker]
        records = records.shuffle(min(SHUFFLE_BUFFER, size), seed=shuffle_seed).repeat()
        examples = records.take(steps * batch_size).map(
            _parser(source.prepared_size, image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    else:
        images = source.images(image_size, worker, workers)
        size = source.shard_sizes(workers)[worker]
        examples = images.shuffle(size, seed=shuffle_seed).repeat().take(steps * batch_size)
    batches = examples.batch(batch_size, drop_remainder=True).enumerate()

    def finish(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = batch
        x = tf.cast(x, tf.float32)
        if augment:
            x = augment_batch(x, tf.stack([tf.constant(augment_seed, tf.int64), index]))
        return x, y

    return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def sample(source: Source, limit: int, image_size: int) -> list[Any]:
    """At most ``limit`` images of ``source``, evenly spaced: file paths, or for a prepared folder the H x W
    uint8 images at ``image_size`` (a prepared folder keeps no path to the originals)."""
    every = max(1, -(-len(source) // limit))
    if not source.prepared:
        return [source.images_dir / name for name in source.table["Image"].iloc[::every]]
    dataset = source.images(image_size).shard(every, 0)
    return [image[..., 0] for image, _ in dataset.as_numpy_iterator()]


def evaluation_batches(source: Source, image_size: int, batch_size: int) -> tf.data.Dataset:
    """``(float32 images, float32 labels)`` batches of every image once, in the source's order."""
    import tensorflow as tf

    images = source.images(image_size).batch(batch_size)
    return images.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(tf.data.AUTOTUNE)


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rotate, shift, zoom (one bilinear resampling, black fill) and change contrast; all draws from ``seed``.

    ``images`` is a float32 ``[b, h, w, 1]`` batch of 0..255 grayscale X-rays; ``seed`` a ``[2]`` int tensor.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    b, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)

    def uniform(i: int, bound: float, centre: float = 0.0) -> tf.Tensor:
        return tf.random.stateless_uniform([b], seeds[i], centre - bound, centre + bound)

    angle = uniform(0, math.radians(ROTATION_DEGREES))
    shift_x, shift_y = uniform(1, SHIFT) * width, uniform(2, SHIFT) * height
    zoom = uniform(3, ZOOM, 1.0)  # > 1 magnifies the content
    contrast = uniform(4, CONTRAST, 1.0)

    # The transform maps each output pixel to the input pixel it samples:
    # input = M (output - centre - shift) + centre, with M = rotation(-angle) / zoom.
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ox, oy = cx + shift_x, cy + shift_y
    transforms = tf.stack(
        [cos, sin, cx - cos * ox - sin * oy, -sin, cos, cy + sin * ox - cos * oy, tf.zeros([b]), tf.zeros([b])],
        axis=1,
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


def fill_cache(source: Source, image_size: int, worker: int = 0, workers: int = 1) -> None:
    """Decode an image folder now, with a progress bar, so a bad file fails before training with its one line.

    A prepared folder is streamed, so there is nothing to fill.
    """
    import tensorflow as tf

    if source.prepared:
        return
    bar = ProgressBar(f"decoding {source.name}", source.shard_sizes(workers)[worker], unit="images")
    done = 0
    try:
        for x, _ in source.images(image_size, worker, workers).batch(64):
            done += int(x.shape[0])
            bar.update(done)
    except tf.errors.OpError as exc:
        # numpy_function reports the Python exception inside a long TensorFlow message; keep its line.
        lines = [line.strip() for line in str(exc).splitlines() if "InputError:" in line]
        if lines:
            raise InputError(lines[0].split("InputError:", 1)[1].strip()) from None
        raise
    finally:
        bar.close()


# --- image folder ----------------------------------------------------------------------------------------------

# (folder, images, size) -> cached dataset: a process decodes an image folder once, whatever asks for it.
_CACHED: dict[tuple[str, tuple[str, ...], int], tf.data.Dataset] = {}


def _decoded(table: pd.DataFrame, images_dir: Path, image_size: int) -> tf.data.Dataset:
    """Images of ``table`` decoded by `pipeline.data.imaging` (in parallel) and cached in memory."""
    import tensorflow as tf

    key = (os.fspath(images_dir), tuple(table["Image"]), image_size)
    if key not in _CACHED:
        paths = [os.fspath(images_dir / name) for name in table["Image"]]
        labels = label_files.label_matrix(table).astype(np.float32)

        def decode(path: bytes) -> np.ndarray:
            return imaging.resize(imaging.load_image(path.decode()), image_size)[..., np.newaxis]

        def decode_tf(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
            return tf.ensure_shape(image, (image_size, image_size, 1)), label

        dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
        _CACHED[key] = dataset.map(decode_tf, num_parallel_calls=tf.data.AUTOTUNE).cache()
    return _CACHED[key]


# --- prepared folder -------------------------------------------------------------------------------------------


def _open_prepared(folder: Path) -> Source:
    damaged = f"{folder} is damaged; prepare it again"
    try:
        manifest = json.loads((folder / prepare.MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{folder / prepare.MANIFEST}: unreadable; {damaged}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != prepare.FORMAT:
        raise InputError(f"{folder / prepare.MANIFEST}: not a manifest written by `prepare`; {damaged}")
    if manifest.get("findings") != list(FINDINGS):
        raise InputError(f"{folder}: prepared for other findings than the 14 NIH ones; prepare it again")
    try:
        shards = tuple((entry["file"], int(entry["images"])) for entry in manifest["shards"])
        size, n_images, refused = int(manifest["image_size"]), int(manifest["n_images"]), int(manifest["n_refused"])
        labels_sha256 = str(manifest["prepared_labels_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{folder / prepare.MANIFEST}: incomplete ({reason(exc)}); {damaged}") from None
    missing = [file for file, _ in shards if not (folder / file).is_file()]
    if missing:
        raise InputError(f"{folder}: shard {missing[0]} is missing ({len(missing)} of {len(shards)}); {damaged}")
    table = label_files.load_labels(folder / prepare.LABELS)
    if len(table) != n_images or len(table) != sum(images for _, images in shards):
        raise InputError(f"{folder}: {prepare.LABELS} and the manifest disagree on the image count; {damaged}")
    return Source(table, folder.name, labels_sha256, folder, prepared_size=size, shards=shards, n_refused=refused)


def _parser(stored_size: int, image_size: int) -> Any:
    import tensorflow as tf

    features = {
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([len(FINDINGS)], tf.int64),
    }

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        example = tf.io.parse_single_example(record, features)
        image = tf.io.decode_png(example["image"], channels=1)
        image = tf.ensure_shape(image, (stored_size, stored_size, 1))
        if image_size != stored_size:
            image = tf.image.resize(image, (image_size, image_size), method="area")
            image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
        return image, tf.cast(example["labels"], tf.float32)

    return parse
