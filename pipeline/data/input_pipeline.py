"""The input pipeline: one interface over an image folder and a prepared folder, for training and evaluation.

`open_source(labels, images)` gives a `Source` either way: a label file with its image folder (small data:
images decoded by `pipeline.data.imaging` once and cached in memory, with a progress bar while that happens), or a
folder made by `pipeline.data.prepare` (any size: shards of raw pixels read image by image at known offsets,
so memory stays flat in the number of images). Training, evaluation and the distribution strategies all read through it.

Two faces, one path. `training_arrays` / `evaluation_arrays` yield NumPy ``(x, y)`` batches and import no
TensorFlow (JAX, or any other consumer); `training_batches` / `evaluation_batches` wrap the very same batches
in a `tf.data.Dataset` for the TensorFlow loop, so both backends see identical pixels. Batches are built by a
small thread pool (file reads and OpenCV release the GIL), a bounded number ahead of the consumer:
measured on this project's 2-core CPU it feeds 224 px batches faster than the former tf.data path that
decoded PNG records (`benchmarks/bench_input.py`), and it needs no second framework on a JAX machine.

Training batches. Each epoch is one seeded pass: this worker's images are permuted from the epoch's seed (a
global shuffle: a prepared folder is random access), and each batch is augmented from random numbers drawn
from ``(epoch seed, batch index)`` alone, so batches are built in parallel and still reproduce exactly: the
epoch's seed is the whole random state a resumed run needs. The augmentation is one affine resampling per
image (rotation up to 6 degrees, shifts up to 5 %, zoom up to 10 %, black fill as on a collimated film) and
a contrast change up to 10 %. **No horizontal flips**: the anatomy is lateralised (the heart lies on the
left, and dextrocardia is itself a finding), so a flipped film is not a plausible X-ray. Augmentation lives
here, not in the model, so checkpoints hold only what inference needs.

Sharding among workers. Worker ``i`` of ``n`` reads shards ``i, i+n, ...`` of a prepared folder (rows of an
image folder). Every worker must run the same number of steps (each is a collective all-reduce), so an
epoch is `steps_per_epoch` batches on every worker: a worker with fewer images wraps around to a new
permutation of its images, never drops any.

About 410 lines, kept whole: the two faces, the batch builder and the augmentation are one contract (the same
batches for every backend); the prepared folder's format itself lives in `pipeline.data.prepared`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.data import imaging, label_files
from pipeline.data import prepared as prepared_folder

if TYPE_CHECKING:
    import tensorflow as tf

ROTATION_DEGREES = 6.0
SHIFT = 0.05
ZOOM = 0.10
CONTRAST = 0.10
THREADS = min(8, os.cpu_count() or 1)  # batch builders
AHEAD = 2  # batches per builder in flight: bounded memory


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
    shards: tuple[prepared_folder.Shard, ...] = ()  # of a prepared folder
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
            return [sum(shard.images for shard in self.shards[i::workers]) for i in range(workers)]
        return [len(range(i, len(self.table), workers)) for i in range(workers)]

    def rows(self, image_size: int, worker: int = 0, workers: int = 1) -> _Rows:
        """Random access to this worker's images at ``image_size`` and their labels (nothing decoded yet)."""
        check_size(self, image_size)
        if self.prepared:
            shards = self.shards[worker::workers]
            starts = np.cumsum([0] + [shard.images for shard in self.shards])
            picked = range(worker, len(self.shards), workers)
            labels = label_files.label_matrix(self.table).astype(np.float32)
            y = np.concatenate([labels[starts[i] : starts[i + 1]] for i in picked]) if shards else labels[:0]
            maps = [prepared_folder.open_shard(self.path, shard, self.prepared_size) for shard in shards]
            return _Rows(maps, y, image_size)
        table = self.table.iloc[worker::workers]
        y = label_files.label_matrix(table).astype(np.float32)
        return _Rows([_decoded(table, self.images_dir, image_size)], y, image_size)


class _Rows:
    """Images (uint8 arrays, or shard readers, concatenated virtually) with their labels, read by index."""

    def __init__(self, parts: Sequence[Any], labels: np.ndarray, image_size: int) -> None:
        self._parts = list(parts)
        self._starts = np.cumsum([0] + [len(part) for part in self._parts])
        self.labels = labels
        self.image_size = image_size

    def __len__(self) -> int:
        return int(self._starts[-1])

    def images(self, indices: np.ndarray) -> np.ndarray:
        """uint8 ``[len(indices), size, size]``, in the order of ``indices``."""
        size = self.image_size
        out = np.empty((len(indices), size, size), np.uint8)
        parts = np.searchsorted(self._starts, indices, side="right") - 1
        for k, (part, index) in enumerate(zip(parts, indices, strict=True)):
            image = self._parts[part][int(index - self._starts[part])]
            out[k] = image if image.shape[0] == size else imaging.resize(image, size)  # from the stored size
        return out


def open_source(labels: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None) -> Source:
    """A prepared folder (``labels`` is a folder with a manifest) or a label file with its image folder.

    Raises
    ------
    InputError
        A label file without an image folder, a listed image missing from it, or a damaged prepared folder
        (or one in an older format: the message names the command that prepares it again).
    """
    path = Path(labels)
    if path.is_dir():
        manifest = prepared_folder.read_manifest(path)
        table = prepared_folder.read_labels(path, manifest)
        return Source(
            table,
            path.name,
            manifest.prepared_labels_sha256,
            path,
            prepared_size=manifest.image_size,
            shards=manifest.shards,
            n_refused=manifest.n_refused,
        )
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


def training_arrays(
    source: Source,
    image_size: int,
    batch_size: int,
    steps: int,
    seed: int,
    epoch: int,
    worker: int = 0,
    workers: int = 1,
    *,
    augment: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Epoch ``epoch`` as exactly ``steps`` shuffled, augmented NumPy batches; imports no TensorFlow.

    Each batch is ``(float32 [b, size, size, 1] in 0..255, float32 [b, 14])``; every draw of randomness
    comes from ``(seed, epoch, worker)``, so the same arguments give the same batches in any process.
    """
    return _training(source, image_size, batch_size, steps, (seed, epoch), worker, workers, augment)


def evaluation_arrays(source: Source, image_size: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """NumPy ``(float32 images, float32 labels)`` batches of every image once, in the source's order (no TF)."""
    rows = source.rows(image_size)
    batches = [np.arange(start, min(start + batch_size, len(rows))) for start in range(0, len(rows), batch_size)]
    return _built(rows, batches, None)


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
    """One epoch of exactly ``steps`` shuffled, augmented batches as a `tf.data.Dataset` (the TensorFlow loop).

    ``batch_size`` is this input pipeline's batch (the global batch divided among the replicas it feeds);
    every draw of randomness comes from ``seed`` (the epoch's seed). The batches are exactly those of
    ``training_arrays(..., seed, epoch=0, ...)``: a loop that folds the epoch into its seed gets the same pixels
    on every backend.
    """
    check_size(source, image_size)
    source.shard_sizes(workers)  # refuse too many workers now, not inside the dataset
    return _dataset(
        lambda: _training(source, image_size, batch_size, steps, (seed, 0), worker, workers, augment), image_size
    )


def evaluation_batches(source: Source, image_size: int, batch_size: int) -> tf.data.Dataset:
    """``(float32 images, float32 labels)`` batches of every image once, in the source's order (tf.data)."""
    check_size(source, image_size)
    return _dataset(lambda: evaluation_arrays(source, image_size, batch_size), image_size)


def sample(source: Source, limit: int, image_size: int) -> list[Any]:
    """At most ``limit`` images of ``source``, evenly spaced: file paths, or for a prepared folder the H x W
    uint8 images at ``image_size`` (a prepared folder keeps no path to the originals)."""
    every = max(1, -(-len(source) // limit))
    if not source.prepared:
        return [source.images_dir / name for name in source.table["Image"].iloc[::every]]
    rows = source.rows(image_size)
    return list(rows.images(np.arange(0, len(rows), every)))


def augment_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate, shift, zoom (one bilinear resampling, black fill) and change contrast; all draws from ``rng``.

    ``images`` is a uint8 or float32 ``[b, h, w]`` batch of 0..255 grayscale X-rays; returns float32.
    """
    b, height, width = images.shape
    draws = rng.uniform(-1.0, 1.0, (5, b))
    angle = draws[0] * math.radians(ROTATION_DEGREES)
    shift_x, shift_y = draws[1] * SHIFT * width, draws[2] * SHIFT * height
    zoom = 1.0 + draws[3] * ZOOM  # > 1 magnifies the content
    contrast = 1.0 + draws[4] * CONTRAST
    cx, cy = (width - 1) / 2, (height - 1) / 2
    out = np.empty((b, height, width), np.float32)
    for k in range(b):
        # Maps each output pixel to the input pixel it samples: input = M (output - centre - shift) + centre,
        # with M = rotation(-angle) / zoom.
        cos, sin = math.cos(angle[k]) / zoom[k], math.sin(angle[k]) / zoom[k]
        ox, oy = cx + shift_x[k], cy + shift_y[k]
        matrix = np.array([[cos, sin, cx - cos * ox - sin * oy], [-sin, cos, cy + sin * ox - cos * oy]])
        moved = cv2.warpAffine(
            images[k].astype(np.float32),
            matrix,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )
        mean = moved.mean()
        out[k] = np.clip((moved - mean) * contrast[k] + mean, 0.0, 255.0)
    return out


def fill_cache(source: Source, image_size: int, worker: int = 0, workers: int = 1) -> None:
    """Decode an image folder now, with a progress bar, so unreadable files are refused before training starts.

    A prepared folder is streamed, so there is nothing to fill.

    Raises
    ------
    InputError
        Listing every listed image that cannot be read (how many, the first few with their reasons).
    """
    if source.prepared:
        return
    _decoded(source.table.iloc[worker::workers], source.images_dir, image_size, name=source.name)


# --- building batches ------------------------------------------------------------------------------------------


def _training(
    source: Source,
    image_size: int,
    batch_size: int,
    steps: int,
    entropy: tuple[int, ...],
    worker: int,
    workers: int,
    augment: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rows = source.rows(image_size, worker, workers)
    seeds = np.random.SeedSequence([*entropy, worker])
    shuffle, augmentation = seeds.spawn(2)
    rng = np.random.default_rng(shuffle)
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(len(rows)) for _ in range(-(-needed // len(rows)))])[:needed]
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    return _built(rows, batches, augmentation if augment else None)


def _built(
    rows: _Rows, batches: list[np.ndarray], augmentation: np.random.SeedSequence | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``batches`` (index arrays) built by a thread pool, in order, a bounded number ahead."""

    def build(number: int) -> tuple[np.ndarray, np.ndarray]:
        indices = batches[number]
        images = rows.images(indices)
        if augmentation is None:
            x = images.astype(np.float32)
        else:
            key = (*augmentation.spawn_key, number)  # this batch's own stream, whatever thread builds it
            rng = np.random.default_rng(np.random.SeedSequence(augmentation.entropy, spawn_key=key))
            x = augment_images(images, rng)
        return x[..., np.newaxis], rows.labels[indices]

    pool = ThreadPoolExecutor(THREADS, thread_name_prefix="input")
    pending: deque[Future] = deque()
    try:
        for number in range(len(batches)):
            pending.append(pool.submit(build, number))
            if len(pending) > AHEAD * THREADS:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _dataset(arrays: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], image_size: int) -> tf.data.Dataset:
    import tensorflow as tf

    signature = (
        tf.TensorSpec((None, image_size, image_size, 1), tf.float32),
        tf.TensorSpec((None, len(FINDINGS)), tf.float32),
    )
    return tf.data.Dataset.from_generator(arrays, output_signature=signature).prefetch(2)


# --- image folder ----------------------------------------------------------------------------------------------

# (folder, images, size) -> decoded uint8 images: a process decodes an image folder once, whatever asks for it.
_CACHED: dict[tuple[str, tuple[str, ...], int], np.ndarray] = {}


def _decoded(table: pd.DataFrame, images_dir: Path, image_size: int, name: str | None = None) -> np.ndarray:
    """Images of ``table`` decoded by `pipeline.data.imaging` (in threads) and cached in memory.

    Every image is tried; the unreadable ones are refused together in one line (train refuses them before it
    writes anything; `prepare` skips and lists them instead).
    """
    key = (os.fspath(images_dir), tuple(table["Image"]), image_size)
    if key in _CACHED:
        return _CACHED[key]
    names = list(table["Image"])
    images = np.empty((len(names), image_size, image_size), np.uint8)
    failures: dict[str, str] = {}

    def decode(k: int) -> None:
        path = os.fspath(images_dir / names[k])
        try:
            images[k] = imaging.resize(imaging.load_image(path), image_size)
        except InputError as exc:
            failures[names[k]] = str(exc).removeprefix(f"{path}: ")

    bar = ProgressBar(f"decoding {name or images_dir.name}", len(names), unit="images")
    try:
        with ThreadPoolExecutor(THREADS, thread_name_prefix="decode") as pool:
            for done, _ in enumerate(pool.map(decode, range(len(names))), 1):
                bar.update(done)
    finally:
        bar.close()
    if failures:
        first = next(iter(sorted(failures.items())))
        raise InputError(
            f"{len(failures):,} of the {len(names):,} images {name or 'listed'} lists cannot be read "
            f"({first_items(sorted(failures))}; e.g. {first[0]}: {first[1]}); fix or remove them from the label "
            "file, or use `prepare`, which skips and lists unreadable images"
        )
    _CACHED[key] = images
    return images
