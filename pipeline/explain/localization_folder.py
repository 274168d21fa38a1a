"""A localization result folder read back: find, read, and tables of `localization.json` for the CLI and dashboard.

The folder is written by `pipeline.explain.localization.write_localization`; only small files are read here (no model,
no TensorFlow), so the dashboard can show results fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.core.errors import InputError
from pipeline.explain.localization import GALLERY, PER_BOX, RESULT, SCORES

__all__ = ["GALLERY", "find_results", "format_summary", "read_result", "results_frame"]


def find_results(folder: str | os.PathLike[str]) -> list[Path]:
    """Folders under ``folder`` (a run) holding a localization.json, sorted."""
    return sorted(path.parent for path in Path(folder).rglob(RESULT))


def read_result(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], pd.DataFrame]:
    """A localization folder's summary and per-box table (`InputError` when incomplete or unreadable)."""
    folder = Path(folder)
    try:
        summary = json.loads((folder / RESULT).read_text())
        per_box = pd.read_csv(folder / PER_BOX)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{folder}: not a complete localization result ({exc}); run `localize` again") from None
    return summary, per_box


def results_frame(summary: Mapping[str, Any], score: str) -> pd.DataFrame:
    """Per finding (and overall): boxes, images, and the mean and interval of ``score`` per source."""
    rows = []
    for name, entry in summary["results"].items():
        row = {"finding": name, "boxes": entry["n_boxes"], "images": entry["n_images"]}
        for source in ("model", "baseline", "difference"):
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
        for score in SCORES:
            lines.append(f"{name if score == SCORES[0] else '':<14} {entry['n_boxes'] if score == SCORES[0] else '':>5}"
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
