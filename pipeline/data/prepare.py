"""Decode a labelled image set once into TFRecord shards that training and evaluation stream (`prepare`).

A prepared folder::

    DATA_DIR/manifest.json                      what it holds (see `prepare`); written last
            labels.csv                          the prepared images' labels, course format, in shard order
            shard-00000-of-00110.tfrecord       up to `SHARD_IMAGES` examples each, at least `MIN_SHARDS` shards

Each example holds the image resized to ``image_size`` and PNG-encoded (8-bit gray), its 14 labels, its
file name and its patient id. Pixels come from `pipeline.data.imaging.load_image` and `pipeline.data.imaging.resize`,
the decoder every other step uses, so a prepared image is exactly what the image-folder path would give.

Full-size NIH PNGs cost 10-14 ms each to decode, so decoding runs in worker processes (they import OpenCV,
not TensorFlow); the parent only wraps their PNG bytes into examples and writes shards in order.

Crash safety. A shard is written under a temporary name and renamed into place, then a small sidecar
(``.shard-....json``: its image count, SHA-256 and refused images) records it as complete. A killed run,
started again with the same arguments, keeps the complete shards and writes the rest; ``manifest.json``
comes last, so a folder with a manifest is complete. The plan (``.plan.json``) pins the arguments, so a
folder is never continued with other labels or another image size.

About 390 lines, kept whole: the folder's format, its resume rules and the worker pool that fills it are one
state machine; `pipeline.data.input_pipeline` is its only reader.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import platform
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.files import read_json_object, sha256_of, write_csv_atomic, write_json_atomic
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.core.text import count
from pipeline.data import imaging, label_files

MANIFEST = "manifest.json"
LABELS = "labels.csv"
PLAN = ".plan.json"
FORMAT = "chestxray-prepared-tfrecord"
FORMAT_VERSION = 1
SHARD_IMAGES = 1024  # at most, per shard: ~40 MB at 224 px
MIN_SHARDS = 16  # at least (when there are as many images), so up to 16 workers each get a share
BLOCK = 64  # images per task sent to a worker
AHEAD = 4  # blocks per worker in flight: keeps workers busy with bounded memory
MIN_IMAGE_SIZE = 32
_WHAT = {
    "labels_sha256": "label file",
    "n_listed": "label file",
    "n_shards": "label file",
    "images_dir": "image folder",
    "image_size": "image size",
    "format": "format",
}


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a prepared folder (a folder holding ``manifest.json``)."""
    return Path(path, MANIFEST).is_file()


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}.tfrecord"


def prepare(
    labels: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int,
    *,
    workers: int | None = None,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Decode, resize and write every image of ``labels`` into shards under ``out_dir``; return the manifest.

    Parameters
    ----------
    labels
        A label file in either format `pipeline.data.label_files.load_labels` reads.
    images_dir
        The folder holding the listed images.
    out_dir
        The prepared folder: new or empty, or a folder an interrupted ``prepare`` with the same arguments left.
    image_size
        Side in pixels of the stored images (train and evaluate may ask for this size or smaller).
    workers
        Decoding processes; default: one per CPU core.
    log
        Receives one line per event.

    Returns
    -------
    dict
        The manifest: ``format``, ``image_size``, ``n_listed``, ``n_images``, ``n_refused``, ``refused``
        (``{image: one-line reason}``), ``n_patients``, ``positives`` per finding, ``shards`` (file, images,
        sha256), ``labels_file``, ``labels_sha256``, ``images_dir``, ``versions``, ``created``.

    Raises
    ------
    InputError
        A bad label file, a missing image folder, ``out_dir`` holding something else, or no readable image.
    """
    if image_size < MIN_IMAGE_SIZE:
        raise InputError(f"`image_size` {image_size}: prepare at least {MIN_IMAGE_SIZE} px (DenseNet121's minimum)")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise InputError(f"`workers` {workers}: use at least 1 decoding process")
    folder = Path(images_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: image folder not found; check `images_dir`")
    table = label_files.load_labels(labels)
    if table.empty:
        raise InputError(f"{Path(labels).name}: the label file lists no image")
    out = Path(out_dir)
    n_shards = max(-(-len(table) // SHARD_IMAGES), min(MIN_SHARDS, len(table)))
    plan = {
        "format": FORMAT,
        "labels_sha256": sha256_of(labels),
        "images_dir": os.fspath(folder.resolve()),
        "image_size": int(image_size),
        "n_shards": n_shards,
        "n_listed": len(table),
    }
    done = _start_or_continue(out, plan)
    if done is not None:
        log(f"{out}: already prepared ({done['n_images']:,} images at {done['image_size']} px), nothing to do")
        return done

    bounds = np.linspace(0, len(table), n_shards + 1).round().astype(int)  # sizes differ by one at most
    shards = [table.iloc[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
    complete = {i: _read_sidecar(out, i, n_shards) for i in range(n_shards)}
    todo = [i for i, sidecar in complete.items() if sidecar is None]
    if len(todo) < n_shards:
        log(f"{out}: {n_shards - len(todo)} of {n_shards} shards already complete, continuing")
    log(f"preparing {count(sum(len(shards[i]) for i in todo), 'image')} at {image_size} px with "
        f"{count(workers, 'process')}")
    bar = ProgressBar("prepare", sum(len(shards[i]) for i in todo), unit="images")
    try:
        _write_shards(out, shards, todo, folder, image_size, workers, bar, complete)
    finally:
        bar.close()
    return _finish(out, table, complete, plan, labels)


# --- the folder ------------------------------------------------------------------------------------------------


def _start_or_continue(out: Path, plan: dict[str, Any]) -> dict[str, Any] | None:
    """Check ``out`` holds nothing else; return its manifest when this preparation is already complete."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder as `out_dir`")
    different = f"{out} holds a different preparation"
    fix = "give another `out_dir`, or delete it to start over"
    if (out / MANIFEST).is_file() or (out / PLAN).is_file():
        saved = _read_json(out / PLAN) if (out / PLAN).is_file() else _read_json(out / MANIFEST).get("plan", {})
        changed = {_WHAT.get(key, key) for key in plan if saved.get(key) != plan[key]}
        if changed:
            raise InputError(f"{different} (another {' and '.join(sorted(changed))}); {fix}")
        if (out / MANIFEST).is_file():
            return _read_json(out / MANIFEST)
        for leftover in out.glob(".*.tmp"):  # writes a kill interrupted
            leftover.unlink(missing_ok=True)
        return None
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and holds no preparation; give another `out_dir`, or empty it")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan, out / PLAN)
    return None


def _sidecar(out: Path, index: int, count: int) -> Path:
    return out / f".{shard_name(index, count)}.json"


def _read_sidecar(out: Path, index: int, count: int) -> dict[str, Any] | None:
    """The record of a complete shard, or None when the shard still has to be written."""
    path = _sidecar(out, index, count)
    if not (path.is_file() and (out / shard_name(index, count)).is_file()):
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _finish(
    out: Path, table: pd.DataFrame, complete: dict[int, dict[str, Any]], plan: dict[str, Any], labels: Any
) -> dict[str, Any]:
    """Write ``labels.csv`` and ``manifest.json`` from the shards' records; refuse an empty result."""
    import tensorflow as tf

    refused: dict[str, str] = {}
    for index in sorted(complete):
        refused.update(complete[index]["refused"])
    written = table[~table["Image"].isin(list(refused))].reset_index(drop=True)
    if written.empty:
        first = next(iter(refused.items()))
        raise InputError(f"none of the {len(table):,} listed images could be read (e.g. {first[0]}: {first[1]})")
    write_csv_atomic(label_files.to_course_format(written), out / LABELS)
    n_shards = len(complete)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "image_size": plan["image_size"],
        "findings": list(FINDINGS),
        "n_listed": len(table),
        "n_images": len(written),
        "n_refused": len(refused),
        "n_patients": int(written["PatientId"].nunique()),
        "positives": {f: int(n) for f, n in zip(FINDINGS, label_files.label_matrix(written).sum(axis=0), strict=True)},
        "labels_file": os.fspath(labels),
        "labels_sha256": plan["labels_sha256"],
        "images_dir": plan["images_dir"],
        "prepared_labels_sha256": sha256_of(out / LABELS),
        "shards": [
            {"file": shard_name(i, n_shards), "images": complete[i]["images"], "sha256": complete[i]["sha256"]}
            for i in range(n_shards)
        ],
        "refused": refused,
        "plan": plan,
        "versions": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "opencv": _opencv_version(),
            "numpy": np.__version__,
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(manifest, out / MANIFEST)
    for i in range(n_shards):
        _sidecar(out, i, n_shards).unlink(missing_ok=True)
    (out / PLAN).unlink(missing_ok=True)
    return manifest


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "delete the folder and prepare again")


# --- decoding and writing --------------------------------------------------------------------------------------


def _write_shards(
    out: Path,
    shards: list[pd.DataFrame],
    todo: list[int],
    folder: Path,
    image_size: int,
    workers: int,
    bar: ProgressBar,
    complete: dict[int, dict[str, Any] | None],
) -> None:
    """Decode the images of the ``todo`` shards in ``workers`` processes and write each shard in order."""
    import tensorflow as tf

    n_shards = len(shards)
    jobs = [(index, shard) for index in todo for shard in [shards[index]]]
    # spawn: the workers must not inherit TensorFlow's threads from this process. A worker that dies
    # (killed, out of memory) breaks the pool with an error instead of a hang.
    context = multiprocessing.get_context("spawn")
    done = 0
    with _workers_skip_main(), ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        results = _decoded(pool, folder, image_size, jobs, workers)
        for index, shard in jobs:
            name = shard_name(index, n_shards)
            tmp = out / f".{name}.{os.getpid()}.tmp"
            refused: dict[str, str] = {}
            count = 0
            try:
                with tf.io.TFRecordWriter(os.fspath(tmp)) as writer:
                    for row in shard.itertuples(index=False):
                        image, png, why = next(results)
                        if png is None:
                            refused[image] = why
                        else:
                            writer.write(_example(png, row, tf))
                            count += 1
                        done += 1
                        bar.update(done, f"shard {index + 1}/{n_shards}")
                digest = sha256_of(tmp)
                os.replace(tmp, out / name)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            record = {"images": count, "sha256": digest, "refused": refused}
            write_json_atomic(record, _sidecar(out, index, n_shards))
            complete[index] = record


def _decoded(
    pool: ProcessPoolExecutor, folder: Path, image_size: int, jobs: list[tuple[int, pd.DataFrame]], workers: int
) -> Iterator[tuple[str, bytes | None, str]]:
    """``(image, png bytes or None, reason)`` for every image of ``jobs`` in order, a bounded number in flight."""
    names = [image for _, shard in jobs for image in shard["Image"]]
    blocks = (
        [(os.fspath(folder / image), image, image_size) for image in names[i : i + BLOCK]]
        for i in range(0, len(names), BLOCK)
    )
    pending: deque[Future] = deque()
    try:
        for block in blocks:
            pending.append(pool.submit(_encode_block, block))
            if len(pending) >= AHEAD * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        raise InputError(
            "a decoding process died (killed, or out of memory); run prepare again with the same arguments "
            "to continue, with fewer workers if memory is short"
        ) from None


@contextlib.contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Start worker processes without re-running the caller's ``__main__`` (they need only this module).

    A spawned process normally re-imports the parent's main module; that fails or misbehaves when the main
    is a script read from stdin, a notebook, or a Streamlit page running in the same process (as in tests).
    """
    main = sys.modules.get("__main__")
    saved = {key: main.__dict__[key] for key in ("__spec__", "__file__") if main is not None and key in main.__dict__}
    try:
        if main is not None:
            main.__spec__ = None
            main.__dict__.pop("__file__", None)
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def _encode_block(tasks: list[tuple[str, str, int]]) -> list[tuple[str, bytes | None, str]]:
    return [_encode(task) for task in tasks]


def _encode(task: tuple[str, str, int]) -> tuple[str, bytes | None, str]:
    """In a worker: decode one image with `pipeline.data.imaging`, resize, and PNG-encode it (lossless)."""
    import cv2

    path, image, size = task
    try:
        pixels = imaging.resize(imaging.load_image(path), size)
    except InputError as exc:
        return image, None, str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - one bad file must never end the preparation
        return image, None, f"could not be decoded ({type(exc).__name__}: {exc})".replace("\n", " ")
    ok, png = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        return image, None, "could not be PNG-encoded after decoding"
    return image, png.tobytes(), ""


def _example(png: bytes, row: Any, tf: Any) -> bytes:
    labels = [int(getattr(row, finding)) for finding in FINDINGS]
    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.Image.encode()])),
        "patient": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(row.PatientId).encode()])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)  # map order otherwise varies by process


def _opencv_version() -> str:
    import cv2

    return cv2.__version__
