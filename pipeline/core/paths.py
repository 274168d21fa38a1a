"""Where the embedded data and the artifacts live, for every module and the app; no command line involved.

The defaults are found relative to this package: in a checkout (or an editable install) the repository root
is the folder above ``pipeline/``. Two environment variables move them, read at each call so a test or a
notebook can set them late:

- ``$CHESTXRAY_NIH``: the folder holding ``images/``, ``metadata/`` and the label CSVs (default ``<root>/nih``);
- ``$CHESTXRAY_ARTIFACTS``: the folder holding ``runs/`` (default ``<root>/artifacts``).

A non-editable install (``pip install .``) ships the code only: there the defaults point at folders that do not
exist, and the commands that need the embedded data say so when they open a file.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # pipeline/core/paths.py -> the repository
NIH_ENV = "CHESTXRAY_NIH"
ARTIFACTS_ENV = "CHESTXRAY_ARTIFACTS"


def nih_dir() -> Path:
    """The embedded NIH data: ``$CHESTXRAY_NIH`` when set, else ``nih/`` in the repository."""
    return Path(os.environ.get(NIH_ENV) or REPO_ROOT / "nih")


def artifacts_dir() -> Path:
    """The artifacts folder: ``$CHESTXRAY_ARTIFACTS`` when set, else ``artifacts/`` in the repository."""
    return Path(os.environ.get(ARTIFACTS_ENV) or REPO_ROOT / "artifacts")


def default_artifacts_dir() -> Path:
    """The artifacts folder when no environment variable moves it (the shipped demo runs are there)."""
    return REPO_ROOT / "artifacts"


def images_dir() -> Path:
    """The 549 embedded 320 px sample images."""
    return nih_dir() / "images"


def metadata_file() -> Path:
    """The full NIH metadata, ``Data_Entry_2017_v2020.csv.gz`` (112,120 images)."""
    return nih_dir() / "metadata" / "Data_Entry_2017_v2020.csv.gz"


def train_val_list() -> Path:
    """The official NIH list of train/validation images."""
    return nih_dir() / "metadata" / "train_val_list.txt.gz"


def test_list() -> Path:
    """The official NIH list of test images."""
    return nih_dir() / "metadata" / "test_list.txt.gz"


def box_list() -> Path:
    """The NIH radiologist bounding boxes, ``BBox_List_2017.csv.gz``."""
    return nih_dir() / "metadata" / "BBox_List_2017.csv.gz"


def sample_labels() -> Path:
    """The labels of the embedded sample images."""
    return nih_dir() / "sample_labels.csv"


def label_file(name: str) -> Path:
    """A label CSV shipped in the NIH folder, e.g. ``train-small.csv``."""
    return nih_dir() / name


def shorten(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> str:
    """``path`` relative to ``base`` (default: the repository root) when it lies inside it, else as given.

    A relative ``path`` is taken as relative to ``base``, as run configs and metrics.json record paths relative
    to the folder commands are run from. Used for short names of runs and evaluations, and paths on pages.
    """
    root = Path(base).resolve() if base is not None else REPO_ROOT
    try:
        return (root / path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
