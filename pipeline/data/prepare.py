"""Decode a labelled image set once into shards of raw pixels that training and evaluation stream (`prepare`).

The folder's format, file names, reader and writer belong to `pipeline.data.prepared`; this module is the
state machine that fills it. Pixels come from `pipeline.data.imaging.load_image` and
`pipeline.data.imaging.resize`, the decoder every other step uses, so a prepared image is exactly what the
image-folder path would give.

Full-size NIH PNGs cost 10-14 ms each to decode, so decoding runs in worker processes (they import OpenCV,
never TensorFlow: `prepare` runs where TensorFlow is not installed); the parent writes shards in order.
A worker watches its parent and exits when the parent is gone (even after SIGKILL, which runs no cleanup).

Crash safety. A shard is written under a temporary name and renamed into place, then a small sidecar
records it as complete. A killed run, started again with the same arguments, keeps the complete shards and
writes the rest; ``manifest.json`` comes last, so a folder with a manifest is complete. The plan pins the
arguments, so a folder is never continued with other labels or another image size. A run that fails before
any shard is complete (no image readable, a full disk) removes what it wrote, so it never leaves a folder
that blocks the next attempt.

About 360 lines, kept whole: the resume rules and the worker pool that fills the folder are one state machine.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import platform
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items
from pipeline.core.files import sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.core.progress import ProgressBar
from pipeline.core.text import count
from pipeline.data import imaging, label_files, prepared
from pipeline.data.prepared import Manifest, Shard

SHARD_IMAGES = 1024  # at most, per shard: ~50 MB at 224 px
MIN_SHARDS = 16  # at least (when there are as many images), so up to 16 workers each get a share
BLOCK = 64  # images per task sent to a worker
AHEAD = 4  # blocks per worker in flight: keeps workers busy with bounded memory
MIN_IMAGE_SIZE = 32
PARENT_CHECK_SECONDS = 0.5  # how often a worker looks whether its parent is still alive
_WHAT = {
    "labels_sha256": "label file",
    "n_listed": "label file",
    "n_shards": "label file",
    "images_dir": "image folder",
    "image_size": "image size",
    "format": "format",
}


def prepare(
    labels: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    image_size: int,
    *,
    workers: int | None = None,
    log: Callable[[str], Any] = print,
) -> Manifest:
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

    Raises
    ------
    InputError
        A bad label file, a missing image folder, none of the listed images in it, ``out_dir`` holding
        something else, no readable image, or a full disk.
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
    _check_some_present(table, folder, Path(labels).name)
    out = Path(out_dir)
    n_shards = max(-(-len(table) // SHARD_IMAGES), min(MIN_SHARDS, len(table)))
    plan = {
        "format": prepared.FORMAT,
        "format_version": prepared.FORMAT_VERSION,
        "labels_sha256": sha256_of(labels),
        "images_dir": os.fspath(folder.resolve()),
        "image_size": int(image_size),
        "n_shards": n_shards,
        "n_listed": len(table),
    }
    created = not out.exists()
    try:
        done = _start_or_continue(out, plan)
    except OSError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)  # holds at most the plan this call wrote
        raise _write_error(out, exc, len(table) * image_size**2) from None
    if done is not None:
        log(f"{out}: already prepared ({done.n_images:,} images at {done.image_size} px), nothing to do")
        return done
    try:
        bounds = np.linspace(0, len(table), n_shards + 1).round().astype(int)  # sizes differ by one at most
        shards = [table.iloc[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]
        complete = {i: prepared.read_sidecar(out, i, n_shards) for i in range(n_shards)}
        todo = [i for i, record in complete.items() if record is None]
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
    except OSError as exc:
        _clean_failed_start(out, created)
        raise _write_error(out, exc, len(table) * image_size**2) from None
    except InputError:
        _clean_failed_start(out, created)
        raise


def _write_error(out: Path, exc: OSError, size: int) -> InputError:
    """One line for a write that failed: a full disk (say how much is needed), or anything else."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InputError(
            f"{out}: the disk is full (the prepared folder needs about {size / 1e9:.2g} GB); free space and run "
            "the same command again: it continues from the shards already written"
        )
    return InputError(f"{out}: cannot write ({exc.strerror or exc}); check the folder and its permissions")


def _check_some_present(table: pd.DataFrame, folder: Path, name: str) -> None:
    """Refuse before writing anything when not one listed image is in the folder (wrong folder or labels)."""
    names = set(os.listdir(folder))
    if not any(image.split("/", 1)[0] in names for image in table["Image"]):
        raise InputError(
            f"none of the {len(table):,} images {name} lists is in {folder} (e.g. {first_items(table['Image'])}); "
            "check `images_dir`"
        )


def _clean_failed_start(out: Path, created: bool) -> None:
    """After a failure with no shard complete, remove what this preparation wrote (the folder too if it made it)."""
    if not out.is_dir() or prepared.is_prepared(out) or list(out.glob(".shard-*.json")):
        return  # complete shards are kept for the next run to continue from
    for path in prepared.work_files(out):
        path.unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)


# --- the folder ------------------------------------------------------------------------------------------------


def _start_or_continue(out: Path, plan: dict[str, Any]) -> Manifest | None:
    """Check ``out`` holds nothing else; return its manifest when this preparation is already complete."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: is a file; give a folder as `out_dir`")
    different = f"{out} holds a different preparation"
    fix = "give another `out_dir`, or delete it to start over"
    if prepared.is_prepared(out) or (out / prepared.PLAN).is_file():
        saved = prepared.read_plan(out)
        changed = {_WHAT.get(key, key) for key in plan if key != "format_version" and saved.get(key) != plan[key]}
        if changed:
            raise InputError(f"{different} (another {' and '.join(sorted(changed))}); {fix}")
        if prepared.is_prepared(out):
            return prepared.read_manifest(out)  # refuses an older format with the command to prepare again
        for leftover in out.glob(".*.tmp"):  # writes a kill interrupted
            leftover.unlink(missing_ok=True)
        return None
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"{out} is not empty and holds no preparation; give another `out_dir`, or empty it")
    out.mkdir(parents=True, exist_ok=True)
    prepared.write_plan(out, plan)
    return None


def _finish(
    out: Path,
    table: pd.DataFrame,
    complete: dict[int, tuple[Shard, dict[str, str]] | None],
    plan: dict[str, Any],
    labels: Any,
) -> Manifest:
    """Write ``labels.csv`` and ``manifest.json`` from the shards' records; refuse an empty result."""
    refused: dict[str, str] = {}
    for index in sorted(complete):
        refused.update(complete[index][1])
    written = table[~table["Image"].isin(list(refused))].reset_index(drop=True)
    if written.empty:
        first = next(iter(refused.items()))
        for path in prepared.work_files(out):  # nothing worth continuing from
            path.unlink(missing_ok=True)
        raise InputError(f"none of the {len(table):,} listed images could be read (e.g. {first[0]}: {first[1]})")
    manifest = Manifest(
        image_size=plan["image_size"],
        n_listed=len(table),
        n_images=len(written),
        n_refused=len(refused),
        n_patients=int(written["PatientId"].nunique()),
        shards=tuple(complete[i][0] for i in range(len(complete))),
        refused=refused,
        positives={f: int(n) for f, n in zip(FINDINGS, label_files.label_matrix(written).sum(axis=0), strict=True)},
        labels_file=os.fspath(labels),
        labels_sha256=plan["labels_sha256"],
        images_dir=plan["images_dir"],
        prepared_labels_sha256="",  # filled in by `prepared.finish` once labels.csv is written
        plan=plan,
        versions={"python": platform.python_version(), "opencv": _opencv_version(), "numpy": np.__version__},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    prepared.finish(out, written, manifest)
    return prepared.read_manifest(out)


# --- decoding and writing --------------------------------------------------------------------------------------


def _write_shards(
    out: Path,
    shards: list[pd.DataFrame],
    todo: list[int],
    folder: Path,
    image_size: int,
    workers: int,
    bar: ProgressBar,
    complete: dict[int, tuple[Shard, dict[str, str]] | None],
) -> None:
    """Decode the images of the ``todo`` shards in ``workers`` processes and write each shard in order."""
    n_shards = len(shards)
    jobs = [(index, shards[index]) for index in todo]
    # spawn: the workers must not inherit the threads of this process (TensorFlow's, when a caller loaded it).
    # A worker that dies (killed, out of memory) breaks the pool with an error instead of a hang.
    context = multiprocessing.get_context("spawn")
    done = 0
    initargs = (os.getpid(),)
    with _workers_skip_main(), ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=initargs
    ) as pool:
        results = _decoded(pool, folder, image_size, jobs, workers)
        for index, shard in jobs:
            refused: dict[str, str] = {}
            with prepared.write_shard(out, index, n_shards, image_size) as writer:
                for _ in range(len(shard)):
                    image, pixels, why = next(results)
                    if pixels is None:
                        refused[image] = why
                    else:
                        writer.write(np.frombuffer(pixels, np.uint8).reshape(image_size, image_size))
                    done += 1
                    bar.update(done, f"shard {index + 1}/{n_shards}")
            record = Shard(prepared.shard_name(index, n_shards), writer.images, writer.sha256)
            prepared.write_sidecar(out, index, n_shards, record, refused)
            complete[index] = (record, refused)


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


def _worker_init(parent: int | None = None) -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """In a worker: exit as soon as ``parent`` is gone (a SIGKILLed parent cannot stop its workers itself)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def _encode_block(tasks: list[tuple[str, str, int]]) -> list[tuple[str, bytes | None, str]]:
    return [_encode(task) for task in tasks]


def _encode(task: tuple[str, str, int]) -> tuple[str, bytes | None, str]:
    """In a worker: decode one image with `pipeline.data.imaging` and resize it; the raw pixels, or why not."""
    path, image, size = task
    try:
        pixels = imaging.resize(imaging.load_image(path), size)
    except InputError as exc:
        return image, None, str(exc).removeprefix(f"{path}: ")
    except Exception as exc:  # noqa: BLE001 - one bad file must never end the preparation
        return image, None, f"could not be decoded ({type(exc).__name__}: {exc})".replace("\n", " ")
    return image, np.ascontiguousarray(pixels, np.uint8).tobytes(), ""


def _opencv_version() -> str:
    import cv2

    return cv2.__version__
