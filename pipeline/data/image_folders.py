"""The images the dashboard shows: the embedded ones, or a user's own folder named by ``$CHESTXRAY_IMAGES``.

Listing a folder reads only its directory entries (``os.scandir``, no ``stat`` per file, no decoding), so a
folder of all 112,120 NIH images lists in well under a second; images are decoded only when shown, one
thumbnail at a time (`thumbnail`), and the dashboard caches those.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.errors import InputError
from pipeline.data import boxes as boxes_lib
from pipeline.data import imaging

ENV_VAR = "CHESTXRAY_IMAGES"  # a folder of NIH images (any size, named by Image Index) to use instead
NIH_DIR = paths.nih_dir()
EMBEDDED = (NIH_DIR / "images", NIH_DIR / "boxed")  # the 549-image sample and the 6 boxed test images
SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def image_folders() -> tuple[Path, ...]:
    """``$CHESTXRAY_IMAGES`` when set (`InputError` if it is not a folder), else the embedded folders."""
    chosen = os.environ.get(ENV_VAR)
    if not chosen:
        return EMBEDDED
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise InputError(f"${ENV_VAR}={chosen}: not a folder; point it at the folder of the NIH images or unset it")
    return (folder,)


def is_custom() -> bool:
    """Whether the images come from ``$CHESTXRAY_IMAGES`` rather than the embedded folders."""
    return bool(os.environ.get(ENV_VAR))


class ImageIndex(dict[str, str]):
    """``{file name: path}`` of a folder listing, plus ``skipped``: image-named entries that are not regular
    files (a FIFO, a socket, a dangling link), which are never opened, so a page cannot block on them."""

    skipped: list[str]


def list_images(folders: Sequence[str | os.PathLike[str]]) -> ImageIndex:
    """``{file name: path}`` of the regular image files directly in the folders, sorted by name.

    The first folder wins a repeated name. Paths stay strings: 112,120 ``Path`` objects would cost seconds.
    The file type comes from the directory entry (no ``stat`` except for symbolic links).
    """
    found: dict[str, str] = {}
    skipped: list[str] = []
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(SUFFIXES) and not entry.name.startswith("."):
                    if _is_regular(entry):
                        found.setdefault(entry.name, entry.path)
                    else:
                        skipped.append(entry.name)
    index = ImageIndex(sorted(found.items()))
    index.skipped = sorted(skipped)
    return index


def _is_regular(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a symbolic link loop
        return False


def thumbnail(path: str | os.PathLike[str], side: int = 320) -> np.ndarray:
    """The image decoded and shrunk so that its longer side is at most ``side`` pixels (gray uint8)."""
    image = imaging.load_image(path)
    scale = side / max(image.shape)
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def with_boxes(image: np.ndarray, name: str, box_list: pd.DataFrame, thickness: int | None = None) -> np.ndarray:
    """The image (gray or RGB, any size) as RGB with the NIH boxes of ``name`` scaled to it and drawn.

    By default the lines are about 1/200 of the image's side thick, so they stay visible when shown small.
    """
    height, width = image.shape[:2]
    thickness = thickness or max(2, round(max(height, width) / 200))
    return boxes_lib.draw_boxes(image, boxes_lib.scale_boxes(boxes_lib.boxes_for(box_list, [name]), (width, height)),
                                thickness)
