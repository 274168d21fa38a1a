"""Does the Grad-CAM map point at the finding? Scores against the NIH radiologist boxes, next to a prior baseline.

For each box of ``BBox_List_2017`` whose image is present, the map of that box's finding is scored in the
image's own frame (boxes are given on the 1024 x 1024 originals and scaled to the image):

- **pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies inside the box widened by
  `TOLERANCE_PX` pixels of the 1024 px original on every side (the usual 15 px, scaled with the image).
  Where several pixels share the maximum, the point is their centroid. An all-zero map points nowhere.
- **mass share**: the share of the map's positive mass (the sum of its values) inside the box.
- **IoU** of the box with the map thresholded at `IOU_LEVELS` of its maximum (``map >= level * max``).

A pixel belongs to a box when its centre lies inside it. Each score is averaged per finding and over all
boxes, with percentile bootstrap 95% intervals over images (the boxes of a resampled image go together).
The **baseline** is a prior map that sees no image: for an image, the mean of the masks of that finding's
boxes on all *other* images of the box file (leave-one-out), scored the same way. A model that localizes
beats it; one that has only learnt where such findings usually lie does not.

The scores, the baseline and the run over a folder stay together so that the baseline is scored by exactly
the code that scores the model. The result folder (names, writer, reader) is
`pipeline.explain.localization_folder`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.files import sha256_of
from pipeline.core.findings import FINDINGS
from pipeline.data import boxes as boxes_lib
from pipeline.data import imaging
from pipeline.evaluation import bootstrap
from pipeline.explain.localization_folder import Localization, gallery_name

TOLERANCE_PX = 15.0  # pointing-game margin, in pixels of the 1024 px original (Zhang et al. 2016)
IOU_LEVELS = (0.25, 0.5, 0.75)  # map thresholds for the IoU, as shares of the map's maximum
GALLERY_SIDE = 320  # longest side of a gallery image, pixels
SCORES = ("pointing", "mass_share", *(f"iou_{level:g}" for level in IOU_LEVELS))
SOURCES = ("model", "baseline")  # of the scores; the summary adds their difference


@dataclass(frozen=True)
class Box:
    """One box in the pixels of the frame it is scored in (x, y: top-left corner)."""

    x: float
    y: float
    w: float
    h: float


# --- scores of one map against one box --------------------------------------------------------------------------


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Boolean H x W mask of the pixels whose centres lie inside the box."""
    height, width = shape
    columns = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    inside_x = (columns >= box.x) & (columns <= box.x + box.w)
    inside_y = (rows >= box.y) & (rows <= box.y + box.h)
    return inside_y[:, None] & inside_x[None, :]


def peak(heatmap: np.ndarray) -> tuple[float, float] | None:
    """The map's maximum as a point (x, y) in pixel coordinates (centroid of tied maxima); None for a zero map."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    top = heatmap.max()
    if not top > 0:
        return None
    rows, columns = np.nonzero(heatmap == top)
    return float(columns.mean() + 0.5), float(rows.mean() + 0.5)


def score_box(heatmap: np.ndarray, box: Box, tolerance: float) -> dict[str, float]:
    """Pointing hit (1/0), mass share and IoU at each of `IOU_LEVELS` of one map against one box.

    Parameters
    ----------
    heatmap
        H x W map, values >= 0 (negative values count as 0).
    box
        The box in the map's pixels.
    tolerance
        The pointing-game margin in the map's pixels.
    """
    heatmap = np.maximum(np.asarray(heatmap, dtype=np.float64), 0.0)
    mask = box_mask(box, heatmap.shape)
    point = peak(heatmap)
    hit = point is not None and (
        box.x - tolerance <= point[0] <= box.x + box.w + tolerance
        and box.y - tolerance <= point[1] <= box.y + box.h + tolerance
    )
    total = heatmap.sum()
    scores = {"pointing": float(hit), "mass_share": float(heatmap[mask].sum() / total) if total > 0 else 0.0}
    top = heatmap.max()
    for level in IOU_LEVELS:
        region = heatmap >= level * top if top > 0 else np.zeros_like(mask)
        union = np.logical_or(region, mask).sum()
        scores[f"iou_{level:g}"] = float(np.logical_and(region, mask).sum() / union) if union else 0.0
    return scores


# --- the leave-one-out prior ----------------------------------------------------------------------------------


class PriorMaps:
    """Leave-one-out prior maps: per finding, the mean box mask over the other images of a box list.

    Masks are summed once per finding on the 1024 x 1024 original frame; the prior of one image subtracts
    that image's own boxes, so computing it for every image of the list stays linear in the number of boxes.
    """

    def __init__(self, box_list: pd.DataFrame, side: int = boxes_lib.ORIGINAL_SIZE) -> None:
        self.side = side
        self._boxes = box_list
        self._sums: dict[str, np.ndarray] = {}
        self._images: dict[str, int] = {}
        for finding, group in box_list.groupby("Finding"):
            self._sums[finding] = self._mask_sum(group)
            self._images[finding] = group["Image"].nunique()

    def _mask_sum(self, group: pd.DataFrame) -> np.ndarray:
        """Sum of the boxes' masks, each image's boxes of one finding merged into one 0/1 mask first."""
        total = np.zeros((self.side, self.side), np.float64)
        for _, per_image in group.groupby("Image"):
            mask = np.zeros((self.side, self.side), bool)
            for row in per_image.itertuples(index=False):
                mask |= box_mask(Box(row.x, row.y, row.w, row.h), (self.side, self.side))
            total += mask
        return total

    def prior(self, image: str, finding: str, shape: tuple[int, int]) -> np.ndarray | None:
        """The prior of ``finding`` for ``image`` from the other images' boxes, H x W in [0, 1]; None if none."""
        if finding not in self._sums:
            return None
        own = self._boxes[(self._boxes["Image"] == image) & (self._boxes["Finding"] == finding)]
        total = self._sums[finding] - (self._mask_sum(own) if len(own) else 0.0)
        others = self._images[finding] - (1 if len(own) else 0)
        if others <= 0 or total.max() <= 0:
            return None
        height, width = shape
        prior = total / others
        if (height, width) != prior.shape:
            prior = cv2.resize(prior.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return np.clip(prior / prior.max(), 0.0, 1.0)


# --- scoring images ---------------------------------------------------------------------------------------------


def check_boxes(box_list: pd.DataFrame, side: float = boxes_lib.ORIGINAL_SIZE) -> tuple[pd.DataFrame, list[dict]]:
    """The boxes that lie inside the original frame and have a positive size, and the others with why."""
    bad = (box_list["w"] <= 0) | (box_list["h"] <= 0) | (box_list["x"] < 0) | (box_list["y"] < 0) | (
        box_list["x"] + box_list["w"] > side) | (box_list["y"] + box_list["h"] > side)
    skipped = [
        {"image": row.Image, "finding": row.Finding,
         "reason": f"box ({row.x:g}, {row.y:g}, {row.w:g}, {row.h:g}) is empty or outside the {side:g} px frame"}
        for row in box_list[bad].itertuples(index=False)
    ]
    return box_list[~bad].reset_index(drop=True), skipped


def score_image(maps: Mapping[str, np.ndarray], image_boxes: pd.DataFrame, frame: tuple[int, int],
                priors: PriorMaps | None = None) -> pd.DataFrame:
    """Score the boxes of one image against its maps (and, given ``priors``, against the baseline).

    Parameters
    ----------
    maps
        ``{finding: H x W heatmap}``; maps of any size are resized to ``frame``.
    image_boxes
        ``Image, Finding, x, y, w, h`` rows of one image, in pixels of the 1024 px original.
    frame
        (width, height) of the image the boxes are scored on.

    Returns
    -------
    pandas.DataFrame
        One row per box: its columns, then ``model_<score>`` (and ``baseline_<score>``) for each of `SCORES`.
    """
    width, height = frame
    scale = width / boxes_lib.ORIGINAL_SIZE
    tolerance = TOLERANCE_PX * scale
    scaled = boxes_lib.scale_boxes(image_boxes, (width, height))
    rows = []
    for original, box in zip(image_boxes.itertuples(index=False), scaled.itertuples(index=False), strict=True):
        row = dict(original._asdict())
        frame_box = Box(box.x, box.y, box.w, box.h)
        heatmap = _to_frame(maps[box.Finding], (height, width))
        row.update({f"model_{k}": v for k, v in score_box(heatmap, frame_box, tolerance).items()})
        if priors is not None:
            prior = priors.prior(box.Image, box.Finding, (height, width))
            row.update({f"baseline_{k}": (score_box(prior, frame_box, tolerance)[k] if prior is not None else np.nan)
                        for k in SCORES})
        rows.append(row)
    return pd.DataFrame(rows)


def _to_frame(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != (height, width):
        heatmap = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
    return heatmap


# --- summaries with intervals -------------------------------------------------------------------------------------


def summarize(per_box: pd.DataFrame, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per finding and overall: mean of each score for model, baseline and their difference, with 95% intervals.

    Intervals resample images (all boxes of an image together, `pipeline.evaluation.bootstrap.grouped_mean`);
    each is None with fewer than two images, where a bootstrap says nothing.
    """
    images = pd.Index(per_box["Image"].unique())
    codes = images.get_indexer(per_box["Image"])
    weights = bootstrap.group_weights(len(images), n_bootstrap, seed)
    groups = {finding: per_box["Finding"].to_numpy() == finding for finding in FINDINGS
              if (per_box["Finding"] == finding).any()}
    groups["overall"] = np.ones(len(per_box), bool)
    result = {}
    for name, selected in groups.items():
        entry: dict[str, Any] = {"n_boxes": int(selected.sum()), "n_images": int(np.unique(codes[selected]).size)}
        for score in SCORES:
            values = {source: per_box.get(f"{source}_{score}", pd.Series(np.nan, index=per_box.index))
                      .to_numpy(dtype=float) for source in SOURCES}
            values["difference"] = values["model"] - values["baseline"]
            for source, column in values.items():
                keep = selected & np.isfinite(column)
                entry.setdefault(source, {})[score] = bootstrap.grouped_mean(column[keep], codes[keep], weights)
        result[name] = entry
    return result


# --- the whole run: images in, a result folder out ---------------------------------------------------------------


def localize(heatmaps_of: Callable[[np.ndarray], tuple[Sequence[str], np.ndarray, np.ndarray]],
             boxes_file: str | os.PathLike[str], images_dir: str | os.PathLike[str],
             n_bootstrap: int = 1000, seed: int = 0) -> Localization:
    """Score every box of ``boxes_file`` whose image is in ``images_dir``, and the leave-one-out baseline.

    Parameters
    ----------
    heatmaps_of
        ``image -> (finding names, probabilities, maps [n, H, W])``: the model (see `model_heatmaps`).
    boxes_file
        The NIH box list (`pipeline.data.boxes.load_boxes` reads it).
    images_dir
        Folder of the images, named by the list's ``Image Index``, at any size.

    Raises
    ------
    InputError
        The folder is missing, or none of its images has a usable box. Unreadable images and boxes outside
        the frame are listed in ``summary['skipped']`` and the rest go on.
    """
    from pipeline.explain.gradcam import overlay

    bootstrap.check_bootstrap(n_bootstrap)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: image folder not found; give the folder holding the boxed images")
    box_list = boxes_lib.load_boxes(boxes_file)
    usable, skipped = check_boxes(box_list)
    present = {entry.name for entry in os.scandir(images_dir)}
    wanted = sorted(set(usable["Image"]) & present)
    if not wanted:
        raise InputError(f"{images_dir}: none of the {usable['Image'].nunique():,} images of "
                         f"{Path(boxes_file).name} is in this folder; give the folder of the NIH images")
    priors = PriorMaps(usable)
    parts, gallery = [], {}
    for name in wanted:
        try:
            image = imaging.load_image(images_dir / name)
        except InputError as exc:
            skipped.append({"image": name, "finding": None, "reason": str(exc)})
            continue
        names, probabilities, maps = heatmaps_of(image)
        by_finding = dict(zip(names, maps, strict=True))
        probability = dict(zip(names, probabilities, strict=True))
        image_boxes = boxes_lib.boxes_for(usable, [name])
        scored = score_image(by_finding, image_boxes, (image.shape[1], image.shape[0]), priors)
        scored.insert(2, "probability", [float(probability[f]) for f in scored["Finding"]])
        scored.insert(3, "width", image.shape[1])
        scored.insert(4, "height", image.shape[0])
        parts.append(scored)
        gallery.update(_gallery_images(image, image_boxes, by_finding, overlay))
    if not parts:
        why = skipped[-1]["reason"]
        raise InputError(f"{images_dir}: none of the {len(wanted)} boxed images could be read ({why})")
    per_box = pd.concat(parts, ignore_index=True)
    summary = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "boxes_file": str(boxes_file),
        "boxes_sha256": sha256_of(boxes_file),
        "images_dir": str(images_dir),
        "n_images": int(per_box["Image"].nunique()),
        "n_boxes": len(per_box),
        "tolerance_px_original": TOLERANCE_PX,
        "iou_levels": list(IOU_LEVELS),
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "definitions": DEFINITIONS,
        "results": summarize(per_box, n_bootstrap, seed),
        "skipped": skipped,
    }
    return Localization(summary, per_box, gallery)


DEFINITIONS = {
    "pointing": f"share of boxes whose map maximum lies inside the box widened by {TOLERANCE_PX:g} px of the "
                "1024 px original (Zhang et al. 2016)",
    "mass_share": "share of the map's total mass inside the box",
    **{f"iou_{level:g}": f"IoU of the box with the map region >= {level:g} x its maximum" for level in IOU_LEVELS},
    "baseline": "leave-one-out prior: mean mask of the finding's boxes on all other images of the box file",
    "ci": "percentile bootstrap 95% interval over images; null with fewer than 2 images",
}


def model_heatmaps(model: Any) -> Callable[[np.ndarray], tuple[list[str], np.ndarray, np.ndarray]]:
    """``image -> (names, probabilities, maps)`` of a loaded checkpoint, maps at the image's own size."""
    from pipeline.explain import gradcam
    from pipeline.networks import densenet as model_lib

    names = model_lib.finding_names(model)
    if sorted(names) != sorted(FINDINGS):
        raise InputError(f"the checkpoint predicts {names[0]}, ..., not the 14 NIH findings; use a model from train")

    def heatmaps_of(image: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
        probabilities, maps = gradcam.heatmaps(model, image)
        return names, probabilities, maps

    return heatmaps_of


def _gallery_images(image: np.ndarray, image_boxes: pd.DataFrame, maps: Mapping[str, np.ndarray],
                    overlay: Callable[..., np.ndarray]) -> dict[str, np.ndarray]:
    """Per finding of the image, a small RGB overlay of its heatmap with its boxes drawn."""
    height, width = image.shape
    scale = GALLERY_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    result = {}
    for finding, group in image_boxes.groupby("Finding"):
        blended = overlay(small, _to_frame(maps[finding], (size[1], size[0])), 0.4)
        drawn = boxes_lib.draw_boxes(blended, boxes_lib.scale_boxes(group, size), thickness=2)
        result[gallery_name(group["Image"].iloc[0], finding)] = drawn
    return result
