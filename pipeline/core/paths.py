"""Where the embedded data and the artifacts live, for every module and the app; no command line involved.

The defaults are found relative to this package: in a checkout (or an editable install) the repository root
is the folder above ``pipeline/``. Two environment variables move them, read at each call so a test or a
notebook can set them late:

- ``$CHESTXRAY_NIH``: the folder holding ``images/`` and the label CSVs (default ``<root>/nih``);
- ``$CHESTXRAY_ARTIFACTS``: the folder holding ``runs/`` (default ``<root>/artifacts``).

The NIH metadata (the 112,120-row Data_Entry table, the official split lists, the radiologist boxes and the
Google 2019 expert labels; 1.3 MB) ships inside the package, in ``pipeline/metadata/``, as torchxrayvision
ships its label files: so `audit`, `stats` and `localize` work from any folder after ``pip install .``.
``nih/metadata`` in the checkout is a link to it. A non-editable install has no images: there the other
defaults point at folders that do not exist, and the commands that need them say so when they open a file.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # pipeline/core/paths.py -> the repository
METADATA_DIR = Path(__file__).resolve().parents[1] / "metadata"  # package data (pyproject.toml: package-data)
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
    return METADATA_DIR / "Data_Entry_2017_v2020.csv.gz"


def train_val_list() -> Path:
    """The official NIH list of train/validation images."""
    return METADATA_DIR / "train_val_list.txt.gz"


def test_list() -> Path:
    """The official NIH list of test images."""
    return METADATA_DIR / "test_list.txt.gz"


def box_list() -> Path:
    """The NIH radiologist bounding boxes, ``BBox_List_2017.csv.gz``."""
    return METADATA_DIR / "BBox_List_2017.csv.gz"


def expert_labels_file() -> Path:
    """The Google 2019 radiologist-adjudicated labels of 4 findings on 4,376 NIH images."""
    return METADATA_DIR / "google2019_nih-chest-xray-labels.csv.gz"


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
