"""The localization folder: its file names, its writer and its typed reader, for the CLI and the dashboard.

`pipeline.explain.localization` scores the maps and returns a `Localization`; this module alone knows how
one is laid out on disk: ``localization.json`` (the summary, written last so that its presence means the
folder is complete), ``localization-boxes.csv`` (one row per box) and ``gallery/`` (JPEG overlays, one per
image and finding). Reading needs no model and no TensorFlow, so the dashboard shows results fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.files import output_folder, write_bytes_atomic, write_csv_atomic, write_json_atomic

RESULT = "localization.json"
PER_BOX = "localization-boxes.csv"
GALLERY = "gallery"  # folder of JPEG overlays: each box drawn over its finding's heatmap
SOURCES = ("model", "baseline", "difference")


@dataclass
class Localization:
    """A localization result: the summary (localization.json), one row per box, and the gallery.

    ``gallery`` maps file names (`gallery_name`) to RGB overlays when the result was just computed; a result
    read back from its folder lists the files instead (``gallery_files``), read only when shown.
    """

    summary: dict[str, Any]
    per_box: pd.DataFrame
    gallery: dict[str, np.ndarray] = field(default_factory=dict)
    gallery_files: list[Path] = field(default_factory=list)

    def score_names(self) -> list[str]:
        """The scores the summary holds (pointing, mass share, IoUs), in its order."""
        return list(self.summary["results"]["overall"]["model"])


def gallery_name(image: str, finding: str) -> str:
    """File name of the gallery overlay of one image and finding."""
    return f"{Path(image).stem}-{finding}.jpg"


def write_localization(result: Localization, out_dir: str | os.PathLike[str]) -> Path:
    """Write the per-box CSV, the gallery, then localization.json (last, so its presence means complete)."""
    out = output_folder(out_dir)
    (out / RESULT).unlink(missing_ok=True)
    write_csv_atomic(result.per_box, out / PER_BOX)
    for name, rgb in result.gallery.items():
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            write_bytes_atomic(encoded.tobytes(), out / GALLERY / name)
    write_json_atomic(result.summary, out / RESULT)
    return out / RESULT


def find_results(folder: str | os.PathLike[str]) -> list[Path]:
    """Folders under ``folder`` (a run) holding a localization.json, sorted."""
    return sorted(path.parent for path in Path(folder).rglob(RESULT))


def modified(folder: str | os.PathLike[str]) -> float:
    """When the folder's result was last written (for caches that must reread it then)."""
    return (Path(folder) / RESULT).stat().st_mtime


def read_localization(folder: str | os.PathLike[str]) -> Localization:
    """A localization folder as written by `write_localization` (`InputError` when incomplete or unreadable)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / RESULT).read_text())
        per_box = pd.read_csv(folder / PER_BOX)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{folder}: not a complete localization result ({exc}); run `localize` again") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("results"), dict):
        raise InputError(f"{folder / RESULT}: not a result written by `localize`; run `localize` again")
    return Localization(summary, per_box, gallery_files=sorted((folder / GALLERY).glob("*.jpg")))


def results_frame(summary: Mapping[str, Any], score: str) -> pd.DataFrame:
    """Per finding (and overall): boxes, images, and the mean and interval of ``score`` per source."""
    rows = []
    for name, entry in summary["results"].items():
        row = {"finding": name, "boxes": entry["n_boxes"], "images": entry["n_images"]}
        for source in SOURCES:
            value = entry[source][score]
            ci = value["ci"] or [None, None]
            row.update({source: value["mean"], f"{source}_low": ci[0], f"{source}_high": ci[1]})
        rows.append(row)
    return pd.DataFrame(rows)


def format_summary(summary: Mapping[str, Any]) -> str:
    """Plain-text table: per finding and overall, each score for the model and the baseline with intervals."""
    lines = [f"{summary['n_boxes']} boxes on {summary['n_images']} images; pointing tolerance "
             f"{summary['tolerance_px_original']:g} px of the 1024 px original; baseline: leave-one-out box prior",
             f"{'finding':<14} {'boxes':>5}  {'score':<10} {'model':<22} {'baseline':<22}"]
    for name, entry in summary["results"].items():
        scores = list(entry["model"])
        for score in scores:
            first = score == scores[0]
            lines.append(f"{name if first else '':<14} {entry['n_boxes'] if first else '':>5}"
                         f"  {score:<10} {_value(entry['model'][score]):<22} {_value(entry['baseline'][score]):<22}")
    for item in summary["skipped"]:
        lines.append(f"skipped {item['image']}" + (f" {item['finding']}" if item["finding"] else "")
                     + f": {item['reason']}")
    return "\n".join(lines)


def _value(value: Mapping[str, Any]) -> str:
    if value["mean"] is None:
        return "undefined"
    ci = value["ci"]
    return f"{value['mean']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " (no CI)")
