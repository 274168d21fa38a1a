"""The NIH radiologist bounding boxes (``BBox_List_2017``): a tidy table, scaled and drawn on images.

The NIH file holds 984 boxes on 880 images, in pixels of the 1024 x 1024 originals. Its header is
``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (the four numbers spill into unnamed columns), and it
spells Infiltration ``Infiltrate``; both are straightened out here so the rest of the project sees
``Image, Finding, x, y, w, h`` with the names of `pipeline.core.findings.FINDINGS`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.errors import InputError, reason
from pipeline.core.findings import FINDINGS

ORIGINAL_SIZE = 1024  # side in pixels of the NIH originals the boxes were drawn on
COLUMNS = ["Image", "Finding", "x", "y", "w", "h"]
NIH_SPELLINGS = {"Infiltrate": "Infiltration"}

# One RGB colour per finding, so a finding looks the same on every image.
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200),
]
COLORS: dict[str, tuple[int, int, int]] = dict(zip(FINDINGS, _PALETTE, strict=True))


def load_boxes(path: str | Path | None = None) -> pd.DataFrame:
    """The NIH box list (default: the embedded one) as ``Image, Finding, x, y, w, h`` (floats, 1024 px pixels)."""
    path = Path(path) if path is not None else paths.box_list()
    if not path.is_file():
        raise InputError(f"{path}: box list not found; give the NIH BBox_List_2017.csv(.gz)")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise InputError(f"{path.name}: cannot be read as CSV ({reason(exc)}); give the NIH box list") from None
    if raw.shape[1] < 6 or raw.columns[0] != "Image Index":
        raise InputError(f"{path.name}: expected 'Image Index', 'Finding Label' and four box numbers per row")
    boxes = raw.iloc[:, :6].copy()
    boxes.columns = COLUMNS
    boxes["Image"] = boxes["Image"].astype(str).str.strip()
    boxes["Finding"] = boxes["Finding"].astype(str).str.strip().replace(NIH_SPELLINGS)
    unknown = sorted(set(boxes["Finding"]) - set(FINDINGS))
    if unknown:
        raise InputError(f"{path.name}: unknown finding {unknown[0]!r}; use the NIH finding names")
    numbers = boxes[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    if numbers.isna().any().any():
        row = int(np.flatnonzero(numbers.isna().any(axis=1).to_numpy())[0])
        raise InputError(f"{path.name}: row {row + 2} has a missing or non-numeric box coordinate")
    boxes[["x", "y", "w", "h"]] = numbers.astype(float)
    return boxes.reset_index(drop=True)


def boxes_for(boxes: pd.DataFrame, images: Iterable[str]) -> pd.DataFrame:
    """The boxes of the given image names (none when no image has one)."""
    return boxes[boxes["Image"].isin(set(images))].reset_index(drop=True)


def scale_boxes(boxes: pd.DataFrame, size: int | tuple[int, int], original_size: int = ORIGINAL_SIZE) -> pd.DataFrame:
    """Boxes moved from the ``original_size`` px original to an image shown at ``size`` (side, or (width, height))."""
    width, height = (size, size) if isinstance(size, int) else size
    scaled = boxes.copy()
    scaled[["x", "w"]] = boxes[["x", "w"]] * (width / original_size)
    scaled[["y", "h"]] = boxes[["y", "h"]] * (height / original_size)
    return scaled


def draw_boxes(image: np.ndarray, boxes: pd.DataFrame, thickness: int = 2) -> np.ndarray:
    """The image as RGB uint8 with each box outlined and labelled in its finding's colour.

    ``boxes`` must already be in the image's pixels (see `scale_boxes`); with no boxes, the image is
    returned as RGB unchanged.
    """
    image = np.asarray(image)
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    for box in boxes.itertuples(index=False):
        color = COLORS.get(box.Finding, (255, 0, 0))
        top_left = (round(box.x), round(box.y))
        bottom_right = (round(box.x + box.w), round(box.y + box.h))
        cv2.rectangle(rgb, top_left, bottom_right, color, thickness)
        text_y = top_left[1] - 4 if top_left[1] > 14 else bottom_right[1] + 12
        cv2.putText(rgb, box.Finding, (top_left[0], text_y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return rgb
