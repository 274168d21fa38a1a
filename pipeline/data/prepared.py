"""The prepared folder: the one module that spells its file names and holds its typed reader and its writer.

A prepared folder (written by `pipeline.data.prepare`, read by `pipeline.data.input_pipeline`)::

    DATA_DIR/manifest.json                  what it holds (`Manifest`); written last, so a folder with it is whole
            labels.csv                      the prepared images' labels, course format, in shard order
            shard-00000-of-00016.u8         raw uint8 pixels: ``images x size x size``, row-major, no header

Shards are raw pixels rather than compressed records so that any process reads any image with one read at a
known offset, without TensorFlow and without decoding: a 224 px image is 49 KiB on disk (PNG-encoded it was
about half that, 25.9 MiB per 1,000 images, but cost a decode per image per epoch). The image count and side
of each shard are in the manifest, and the reader checks each file's size against them.

While `prepare` runs, the folder also holds ``.plan.json`` (the arguments it continues with), one
``.shard-....json`` sidecar per complete shard, and ``.*.tmp`` files being written; `finish` removes them.
Format 1 (TFRecord shards of PNG-encoded ``tf.train.Example`` records) is refused with the command that
prepares the folder again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, reason
from pipeline.core.files import read_json_object, sha256_of, write_csv_atomic, write_json_atomic
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files

MANIFEST = "manifest.json"
LABELS = "labels.csv"
PLAN = ".plan.json"
FORMAT = "chestxray-prepared"
FORMAT_VERSION = 2
OLD_FORMATS = {"chestxray-prepared-tfrecord": "TFRecord shards"}
SUFFIX = ".u8"


@dataclass(frozen=True)
class Shard:
    """One shard file: its name, image count and SHA-256."""

    file: str
    images: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a prepared folder holds (``manifest.json``)."""

    image_size: int
    n_listed: int
    n_images: int
    n_refused: int
    n_patients: int
    shards: tuple[Shard, ...]
    refused: dict[str, str]  # image -> one-line reason
    positives: dict[str, int]
    labels_file: str
    labels_sha256: str
    images_dir: str
    prepared_labels_sha256: str
    plan: dict[str, Any]
    versions: dict[str, str]
    created: str
    findings: tuple[str, ...] = FINDINGS
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["findings"] = list(self.findings)
        return data


def is_prepared(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a prepared folder (a folder holding ``manifest.json``)."""
    return Path(path, MANIFEST).is_file()


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}{SUFFIX}"


def sidecar_path(out: Path, index: int, count: int) -> Path:
    """Where `prepare` records a complete shard (its `Shard` fields and refused images) until `finish`."""
    return out / f".{shard_name(index, count)}.json"


def prepare_again(manifest: dict[str, Any], folder: Path) -> str:
    """The command that prepares ``folder`` again, from what its (possibly old) manifest recorded."""
    plan = manifest.get("plan") if isinstance(manifest.get("plan"), dict) else {}
    labels = manifest.get("labels_file", "LABELS")
    images = manifest.get("images_dir", plan.get("images_dir", "IMAGES"))
    size = manifest.get("image_size", plan.get("image_size", 224))
    return f"python -m pipeline prepare --labels {labels} --images {images} --out NEW_FOLDER --image-size {size}"


# --- reader ----------------------------------------------------------------------------------------------------


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """The typed manifest of a prepared folder, its shards checked to exist at the size it records.

    Raises
    ------
    InputError
        No manifest, a damaged one, an older format (naming the command that prepares it again), or a
        shard missing or of the wrong size.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    damaged = f"{folder} is damaged; prepare it again"
    if not path.is_file():
        raise InputError(f"{folder}: a folder without {MANIFEST}; give a label file, or a folder made by `prepare`")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise InputError(f"{path}: unreadable; {damaged}") from None
    if not isinstance(data, dict) or (data.get("format") != FORMAT and data.get("format") not in OLD_FORMATS):
        raise InputError(f"{path}: not a manifest written by `prepare`; {damaged}")
    if data["format"] in OLD_FORMATS or data.get("format_version") != FORMAT_VERSION:
        what = OLD_FORMATS.get(data["format"], f"format version {data.get('format_version')}")
        raise InputError(
            f"{folder} was prepared by an older version ({what}); prepare it again: {prepare_again(data, folder)}"
        )
    if data.get("findings") != list(FINDINGS):
        raise InputError(f"{folder}: prepared for other findings than the 14 NIH ones; prepare it again")
    try:
        shards = tuple(Shard(str(s["file"]), int(s["images"]), str(s["sha256"])) for s in data["shards"])
        manifest = Manifest(
            image_size=int(data["image_size"]),
            n_listed=int(data["n_listed"]),
            n_images=int(data["n_images"]),
            n_refused=int(data["n_refused"]),
            n_patients=int(data["n_patients"]),
            shards=shards,
            refused={str(k): str(v) for k, v in dict(data["refused"]).items()},
            positives={str(k): int(v) for k, v in dict(data["positives"]).items()},
            labels_file=str(data["labels_file"]),
            labels_sha256=str(data["labels_sha256"]),
            images_dir=str(data["images_dir"]),
            prepared_labels_sha256=str(data["prepared_labels_sha256"]),
            plan=dict(data["plan"]),
            versions={str(k): str(v) for k, v in dict(data["versions"]).items()},
            created=str(data["created"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: incomplete ({reason(exc)}); {damaged}") from None
    side = manifest.image_size
    for shard in shards:
        file = folder / shard.file
        if not file.is_file():
            missing = sum(not (folder / s.file).is_file() for s in shards)
            raise InputError(f"{folder}: shard {shard.file} is missing ({missing} of {len(shards)}); {damaged}")
        if file.stat().st_size != shard.images * side * side:
            raise InputError(f"{folder}: shard {shard.file} is not {shard.images} images of {side} px; {damaged}")
    if manifest.n_images != sum(s.images for s in shards):
        raise InputError(f"{folder}: the manifest's image count and its shards disagree; {damaged}")
    return manifest


def read_labels(folder: str | os.PathLike[str], manifest: Manifest) -> pd.DataFrame:
    """The canonical label table of the prepared images, in shard order, checked against the manifest."""
    table = label_files.load_labels(Path(folder, LABELS))
    if len(table) != manifest.n_images:
        raise InputError(f"{folder}: {LABELS} and the manifest disagree on the image count; prepare it again")
    return table


def open_shard(folder: str | os.PathLike[str], shard: Shard, image_size: int) -> ShardReader:
    """Random access to the shard's images (nothing read yet)."""
    return ShardReader(Path(folder, shard.file), shard.images, image_size)


class ShardReader:
    """A shard's images by index, each read with one ``pread``: thread-safe, and unlike a memory map the pages
    read never count towards the process's memory, which stays flat however many images an epoch reads."""

    def __init__(self, path: Path, images: int, image_size: int) -> None:
        self.path, self.images, self.image_size = path, images, image_size
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.images

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.images:
            raise IndexError(f"image {index} of a shard of {self.images}")
        size = self.image_size * self.image_size
        data = os.pread(self._fd, size, int(index) * size)
        if len(data) != size:
            raise InputError(f"{self.path}: shorter than the manifest says; prepare the folder again")
        return np.frombuffer(data, np.uint8).reshape(self.image_size, self.image_size)

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


# --- writer ----------------------------------------------------------------------------------------------------


class ShardWriter:
    """Appends images to a temporary file and hashes them as they go; `commit` renames it into place."""

    def __init__(self, handle: IO[bytes], image_size: int) -> None:
        self._handle, self._size = handle, image_size
        self._hash = hashlib.sha256()
        self.images = 0

    def write(self, image: np.ndarray) -> None:
        if image.shape != (self._size, self._size) or image.dtype != np.uint8:
            raise ValueError(f"a prepared image is {self._size} x {self._size} uint8, not {image.shape} {image.dtype}")
        data = np.ascontiguousarray(image).tobytes()
        self._handle.write(data)
        self._hash.update(data)
        self.images += 1

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextmanager
def write_shard(out: Path, index: int, count: int, image_size: int) -> Iterator[ShardWriter]:
    """Write shard ``index`` of ``count`` whole or not at all (a ``.tmp`` file, removed on any failure)."""
    name = shard_name(index, count)
    tmp = out / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            writer = ShardWriter(handle, image_size)
            yield writer
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_sidecar(out: Path, index: int, count: int, shard: Shard, refused: dict[str, str]) -> None:
    write_json_atomic({**asdict(shard), "refused": refused}, sidecar_path(out, index, count))


def read_sidecar(out: Path, index: int, count: int) -> tuple[Shard, dict[str, str]] | None:
    """The record of a complete shard, or None when the shard still has to be written."""
    path = sidecar_path(out, index, count)
    if not (path.is_file() and (out / shard_name(index, count)).is_file()):
        return None
    try:
        data = json.loads(path.read_text())
        return Shard(str(data["file"]), int(data["images"]), str(data["sha256"])), dict(data["refused"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_plan(out: Path) -> dict[str, Any]:
    """The plan of an unfinished preparation, or of a finished one (kept in its manifest)."""
    fix = "delete the folder and prepare again"
    if (out / PLAN).is_file():
        return read_json_object(out / PLAN, fix)
    plan = read_json_object(out / MANIFEST, fix).get("plan", {})
    return plan if isinstance(plan, dict) else {}


def write_plan(out: Path, plan: dict[str, Any]) -> None:
    write_json_atomic(plan, out / PLAN)


def finish(out: Path, written: pd.DataFrame, manifest: Manifest) -> None:
    """Write ``labels.csv`` and then ``manifest.json`` (last: it marks the folder whole); drop the work files."""
    write_csv_atomic(label_files.to_course_format(written), out / LABELS)
    manifest = replace(manifest, prepared_labels_sha256=sha256_of(out / LABELS))
    write_json_atomic(manifest.to_json(), out / MANIFEST)
    for i in range(len(manifest.shards)):
        sidecar_path(out, i, len(manifest.shards)).unlink(missing_ok=True)
    (out / PLAN).unlink(missing_ok=True)


def work_files(out: Path) -> list[Path]:
    """The files a preparation in progress keeps in ``out`` (plan, sidecars, temporary and shard files)."""
    return [p for p in out.iterdir() if p.name.startswith((".shard-", "shard-", PLAN)) or p.name.endswith(".tmp")]
