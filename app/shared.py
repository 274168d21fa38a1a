"""What every page shares: the sidebar's choices, cached calls into `pipeline`, commands to show, the chart style.

Nothing here imports TensorFlow: only the Predict page loads a model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pipeline import data, evaluate, imagefolder, runs
from pipeline.cli import METADATA, NIH_DIR, REPO_ROOT
from pipeline.errors import InputError

IMAGES_DIR = NIH_DIR / "images"
SAMPLE_LABELS = NIH_DIR / "sample_labels.csv"
DATA_SOURCES = {"Embedded sample": SAMPLE_LABELS, "Full NIH metadata": METADATA}
# The label files shipped in nih/, offered wherever a page lets the user pick one.
NIH_LABEL_FILES = {
    "train-small.csv": NIH_DIR / "train-small.csv",
    "valid-small.csv": NIH_DIR / "valid-small.csv",
    "test.csv": NIH_DIR / "test.csv",
    "sample_labels.csv": SAMPLE_LABELS,
    "Data_Entry_2017_v2020.csv.gz (full)": METADATA,
}

DISCLAIMER = (
    "**For research and education only.** This is not a medical device: do not use it to diagnose, treat or "
    "triage patients."
)
CITATION = (
    "Images and labels: NIH Clinical Center ChestX-ray14. Wang X, Peng Y, Lu L, Lu Z, Bagheri M, Summers RM, "
    "*ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised Classification and "
    "Localization of Common Thorax Diseases*, IEEE CVPR 2017. We thank the NIH Clinical Center for making the "
    "data public."
)

POSITIVE = "#c0392b"  # positives, high probabilities, leaks
NEGATIVE = "#2e86c1"  # negatives, the reference
NEUTRAL = "#7f8c8d"
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
          "#7f7f7f", "#393b79", "#ad494a", "#637939", "#843c39"]  # one colour per curve, 14 for the findings


# --- the sidebar ---------------------------------------------------------------------------------------------


def sidebar() -> None:
    """The choices every page reads: which data, which run. Called once by main.py, shown on every page."""
    with st.sidebar:
        st.radio(
            "Data",
            list(DATA_SOURCES),
            index=1 if imagefolder.is_custom() else 0,  # a user's own folder is labelled by the full metadata
            key="data_source",
            captions=["549 images shipped in nih/", "112,120 images of 30,805 patients"],
            help="What the Home and Dataset pages describe.",
        )
        found = runs.find_runs(runs.artifacts_dir())
        if found:
            names = [run.name for run in found]
            st.selectbox("Run", names, index=names.index(_default_run(found).name), key="run",
                         help=f"Training runs found under {display_path(runs.artifacts_dir() / 'runs')}")
        else:
            st.caption(f"No training run under `{display_path(runs.artifacts_dir() / 'runs')}` yet; see Home.")
        st.caption(images_note())
        st.caption(DISCLAIMER)


def images_note() -> str:
    """Where the gallery's and Predict's images come from, and how to use a full image folder instead."""
    try:
        count = len(image_index())
    except InputError as exc:
        return f"Images: {exc}"
    if imagefolder.is_custom():
        folder = imagefolder.image_folders()[0]
        return f"Images: {count:,} files in `{folder}` (from ${imagefolder.ENV_VAR})."
    return (f"Images: the {count:,} embedded in `nih/images` and `nih/boxed`. For your own full NIH folder: "
            f"`{imagefolder.ENV_VAR}=/data/nih/images make run`.")


@st.cache_resource(show_spinner="Listing the image folder...", ttl=600)
def _image_index(folders: tuple[str, ...]) -> dict[str, str]:
    # a resource, not data: shared as is, never copied (a copy of 112,120 entries per call would cost seconds)
    return imagefolder.list_images(folders)


def image_index() -> dict[str, str]:
    """``{file name: path}`` of the images the pages show (embedded, or ``$CHESTXRAY_IMAGES``), listed once."""
    return _image_index(tuple(str(folder) for folder in imagefolder.image_folders()))


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, side: int = 320) -> np.ndarray:
    """`pipeline.imagefolder.thumbnail`, made when first shown and kept."""
    return imagefolder.thumbnail(path, side)


def _default_run(found: list[runs.Run]) -> runs.Run:
    """The shipped demo run, else the first run with a checkpoint and an evaluation, else with a checkpoint."""
    for wanted in (
        lambda r: r.name == runs.DEMO_RUN and r.checkpoint,
        lambda r: r.checkpoint and r.evaluations,
        lambda r: r.checkpoint,
    ):
        for run in found:
            if wanted(run):
                return run
    return found[0]


def data_choice() -> tuple[str, Path]:
    """The sidebar's data: its name and label file."""
    name = st.session_state.get("data_source", next(iter(DATA_SOURCES)))
    return name, DATA_SOURCES[name]


def chosen_run() -> runs.Run | None:
    """The sidebar's run, or None when there is none."""
    found = {run.name: run for run in runs.find_runs(runs.artifacts_dir())}
    if not found:
        return None
    return found.get(st.session_state.get("run", ""), _default_run(list(found.values())))


def headline_evaluation(run: runs.Run) -> Path | None:
    """The evaluation a run is judged by: on the test set (``eval-test``), else its first evaluation, else None."""
    for path in run.evaluations:
        if path.name == "eval-test":
            return path
    return run.evaluations[0] if run.evaluations else None


# --- cached calls into pipeline ------------------------------------------------------------------------------


@st.cache_data(show_spinner="Reading the label file...")
def load_labels(path: str) -> pd.DataFrame:
    """`pipeline.data.load_labels` of a file, cached by path."""
    return data.load_labels(path)


@st.cache_data(show_spinner="Reading the uploaded label file...", max_entries=20)
def load_uploaded_labels(name: str, content: bytes) -> pd.DataFrame:
    """`pipeline.data.load_labels_bytes` of an upload, cached by its name and bytes."""
    return data.load_labels_bytes(content, name)


@st.cache_data(show_spinner="Reading the evaluation...")
def load_eval(path: str, modified: float) -> dict:
    """`pipeline.evaluate.load_eval`, cached until metrics.json changes (``modified`` is its mtime)."""
    return evaluate.load_eval(path)


def load_eval_fresh(path: Path) -> dict:
    """`load_eval`, reread when the folder's metrics.json is rewritten."""
    return load_eval(str(path), (path / "metrics.json").stat().st_mtime)


# --- commands shown when something is missing -----------------------------------------------------------------


def display_path(path: str | Path) -> str:
    """A path relative to the repository root when it lies inside it (commands are run from there).

    Relative paths, as configs and metrics record them, are taken as relative to the repository root too.
    """
    try:
        return (REPO_ROOT / path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def train_command(run_dir: Path | None = None) -> str:
    """The command that trains a run on the embedded split."""
    out = display_path(run_dir or runs.artifacts_dir() / "runs" / "demo")
    return (
        ".venv/bin/python -m pipeline train --train nih/train-small.csv --valid nih/valid-small.csv \\\n"
        f"    --images nih/images --out {out}"
    )


def evaluate_command(checkpoint: Path, out: Path) -> str:
    """The command that evaluates a checkpoint on the embedded test set, thresholds chosen on validation."""
    return (
        f".venv/bin/python -m pipeline evaluate --checkpoint {display_path(checkpoint)} \\\n"
        "    --labels nih/test.csv --images nih/images --valid-labels nih/valid-small.csv \\\n"
        f"    --out {display_path(out)}"
    )


def explain_missing_run() -> None:
    """Say that no trained run exists and how to make and evaluate one."""
    run_dir = runs.artifacts_dir() / "runs" / "demo"
    st.info(
        f"No trained model yet: there is no run under `{display_path(runs.artifacts_dir() / 'runs')}`. "
        "Train one on the embedded split (add `--weights none` when offline), then evaluate it:"
    )
    st.code(train_command(run_dir) + "\n" + evaluate_command(run_dir / "best.keras", run_dir / "eval-test"),
            language="bash")


# --- the look of charts -------------------------------------------------------------------------------------


def style(fig: go.Figure, height: int = 380, legend: bool = True) -> go.Figure:
    """The common look of every chart: title top left, the legend in one row between title and plot."""
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 80 if legend else 45, "b": 10},
        font={"size": 13},
        showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "xanchor": "left", "x": 0, "title": None},
        title={"x": 0, "xanchor": "left", "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 12},
               "font": {"size": 15}},
    )
    return fig


def side_legend(fig: go.Figure) -> go.Figure:
    """A legend in one column right of the plot, for charts with many series."""
    return fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                             margin={"t": 50})


def chart(fig: go.Figure) -> None:
    """Show a Plotly figure at the container's width, without the Plotly logo."""
    st.plotly_chart(fig, config={"displaylogo": False})


def fmt_ci(value: float | None, interval: list[float] | None) -> str:
    """``0.712 (95% CI 0.601-0.813)``, or what is known of it."""
    if value is None:
        return "undefined"
    return f"{value:.3f}" + (f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")


def env_note() -> str:
    """Where runs are read from, when $CHESTXRAY_ARTIFACTS moves it away from the default."""
    return f" (from ${runs.ENV_VAR})" if os.environ.get(runs.ENV_VAR) else ""
