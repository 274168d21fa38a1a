"""Atomic writes, file hashes and small JSON reads shared by every step that touches disk.

Each write goes to a temporary file in the target's folder, is flushed to disk, then renamed over the
target: a reader, or a run resumed after a crash, sees either the old file or the new one, never half.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # not imported at run time: serving a prediction never needs pandas
    import pandas as pd

from pipeline.core.errors import InputError, reason

FILE_MODE = 0o644  # mkstemp creates 0600 files; results are meant to be shared


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[Any]], Any], binary: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary text (or ``binary``) file, then rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", newline="") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def output_folder(path: str | os.PathLike[str]) -> Path:
    """Create the folder a command writes its results into; `InputError` when that is not possible."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot create the output folder ({exc.strerror})") from None
    return folder


@contextmanager
def staged_folder(path: str | os.PathLike[str], last: str, replaces: tuple[str, ...] = ()) -> Iterator[Path]:
    """Write a folder whole or not at all: yield an empty temporary folder beside ``path`` to write into.

    When the block ends, a new ``path`` is the temporary folder renamed; an existing one gets the new files
    moved in (renames need no space), its old ``last`` file (the one that vouches for the rest) removed first
    and the new one moved in last; files named in ``replaces`` that the new folder lacks are removed (an
    earlier result's optional files), others left alone. When writing fails (a full disk) nothing in
    ``path`` has changed, the temporary folder is removed and the `OSError` becomes a one-line `InputError`.
    """
    target = Path(path)
    output_folder(target.parent)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        yield stage
        os.chmod(stage, 0o755)
        if not target.exists():
            os.rename(stage, target)
            return
        if not target.is_dir():
            raise InputError(f"{target}: exists and is not a folder; give a folder for the results")
        (target / last).unlink(missing_ok=True)
        for name in replaces:
            if not (stage / name).exists():
                (target / name).unlink(missing_ok=True)
        for item in sorted(stage.iterdir(), key=lambda item: item.name == last):
            os.replace(item, target / item.name)
    except OSError as exc:
        raise InputError(
            f"{target}: cannot write the results ({exc.strerror or reason(exc)}); nothing there was changed: "
            "free space or fix the folder's permissions, then rerun"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_bytes_atomic(content: bytes, path: str | os.PathLike[str]) -> Path:
    """Write ``content`` to ``path`` atomically (images)."""
    return write_atomic(path, lambda file: file.write(content), binary=True)


def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda file: file.write(text))


def write_json_atomic(value: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``value`` as indented JSON (NaN refused, since JSON has none) atomically."""
    return write_text_atomic(json.dumps(value, indent=2, allow_nan=False) + "\n", path)


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` as CSV without its index, atomically."""
    return write_atomic(path, lambda file: frame.to_csv(file, index=False))


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes: which exact label file a run or an evaluation used."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


_HASHES: dict[tuple[str, int, int, int], str] = {}
_HASHES_KEPT = 64  # a few checkpoints and exports: the dashboard asks on every rerun
_HASHES_LOCK = threading.Lock()


def sha256_cached(path: str | os.PathLike[str]) -> str:
    """`sha256_of`, remembered per (path, size, modification time, inode): asking again for an unchanged checkpoint
    is free, while a file rewritten or replaced (other weights under the same name) is hashed anew."""
    info = os.stat(path)
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino)
    with _HASHES_LOCK:  # the dashboard's sessions are threads
        known = _HASHES.get(key)
    if known is None:
        known = sha256_of(path)
        with _HASHES_LOCK:
            while len(_HASHES) >= _HASHES_KEPT:
                _HASHES.pop(next(iter(_HASHES)))
            _HASHES[key] = known
    return known


def read_json_object(path: str | os.PathLike[str], fix: str) -> dict[str, Any]:
    """A JSON object file (a config, a state); `InputError` ending in ``fix`` when it is unreadable or not one."""
    try:
        with open(path) as handle:
            value = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: not valid JSON ({reason(exc)}); {fix}") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(value).__name__}; {fix}")
    return value
