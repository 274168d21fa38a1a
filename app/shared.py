"""What every page shares: the error frame, the sidebar's choices, cached calls into `pipeline`, commands to show.

Pages import it as ``shared``: Streamlit puts the app's folder on the import path of the scripts it runs.
The figures and their look come from `pipeline.plots`. Nothing here imports TensorFlow: only the Predict
page loads a model.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pipeline.core import paths
from pipeline.core.errors import InputError, first_items
from pipeline.data import image_folders, label_files
from pipeline.evaluation import results
from pipeline.training import runs

IMAGES_DIR = paths.images_dir()
SAMPLE_LABELS = paths.sample_labels()
DATA_SOURCES = {"Embedded sample": SAMPLE_LABELS, "Full NIH metadata": paths.metadata_file()}
# The label files shipped in nih/, offered wherever a page lets the user pick one.
NIH_LABEL_FILES = {
    "train-small.csv": paths.label_file("train-small.csv"),
    "valid-small.csv": paths.label_file("valid-small.csv"),
    "test.csv": paths.label_file("test.csv"),
    "sample_labels.csv": SAMPLE_LABELS,
    "Data_Entry_2017_v2020.csv.gz (full)": paths.metadata_file(),
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



# --- the error frame -----------------------------------------------------------------------------------------


def show_error(exc: InputError) -> None:
    """The one way a page shows bad input: its one-line message in a red box."""
    st.error(redact(str(exc)), icon=":material/error:")


@contextmanager
def guard() -> Iterator[None]:
    """Run one section of a page: an `InputError` inside it is shown with `show_error` and the page goes on.

    main.py runs every page inside one too, so an error outside any section still ends in the same box,
    never a traceback.
    """
    try:
        yield
    except InputError as exc:
        show_error(exc)


# --- the sidebar ---------------------------------------------------------------------------------------------


def sidebar() -> None:
    """The choices every page reads: which data, which run. Called once by main.py, shown on every page."""
    with st.sidebar:
        st.radio(
            "Data",
            list(DATA_SOURCES),
            index=1 if image_folders.is_custom() else 0,  # a user's own folder is labelled by the full metadata
            key="data_source",
            captions=["549 images shipped in nih/", "112,120 images of 30,805 patients"],
            help="What the Home and Dataset pages describe.",
        )
        found = runs.find_runs(paths.artifacts_dir())
        if found:
            names = [run.name for run in found]
            st.selectbox("Run", names, index=names.index(runs.default_run(found).name), key="run",
                         help=f"Training runs found under {display_path(paths.artifacts_dir() / 'runs')}")
        else:
            st.caption(f"No training run under `{display_path(paths.artifacts_dir() / 'runs')}` yet; see Home.")
        st.caption(images_note())
        st.caption(DISCLAIMER)


def images_note() -> str:
    """Where the gallery's and Predict's images come from, and how to use a full image folder instead."""
    try:
        count = len(image_index())
    except InputError as exc:
        return f"Images: {exc}"
    if image_folders.is_custom():
        skipped = image_index().skipped
        note = f" Skipped, not regular files: {first_items(skipped)}." if skipped else ""
        return f"Images: {count:,} files in the folder named by `${image_folders.ENV_VAR}`.{note}"
    return (f"Images: the {count:,} embedded in `nih/images` and `nih/boxed`. For your own full NIH folder: "
            f"`{image_folders.ENV_VAR}=/data/nih/images make run`.")


@st.cache_resource(show_spinner="Listing the image folder...", ttl=600)
def _image_index(folders: tuple[str, ...]) -> image_folders.ImageIndex:
    # a resource, not data: shared as is, never copied (a copy of 112,120 entries per call would cost seconds)
    return image_folders.list_images(folders)


def image_index() -> image_folders.ImageIndex:
    """``{file name: path}`` of the images the pages show (embedded, or ``$CHESTXRAY_IMAGES``), listed once."""
    return _image_index(tuple(str(folder) for folder in image_folders.image_folders()))


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(path: str, side: int = 320) -> np.ndarray:
    """`pipeline.data.image_folders.thumbnail`, made when first shown and kept."""
    return image_folders.thumbnail(path, side)


def data_choice() -> tuple[str, Path]:
    """The sidebar's data: its name and label file."""
    name = st.session_state.get("data_source", next(iter(DATA_SOURCES)))
    return name, DATA_SOURCES[name]


def chosen_run() -> runs.Run | None:
    """The sidebar's run, or None when there is none."""
    found = {run.name: run for run in runs.find_runs(paths.artifacts_dir())}
    if not found:
        return None
    return found.get(st.session_state.get("run", ""), runs.default_run(list(found.values())))


def headline_evaluation(run: runs.Run) -> Path | None:
    """The evaluation the pages judge a run by (`pipeline.training.runs.headline_evaluation`)."""
    return runs.headline_evaluation(run)


# --- cached calls into pipeline ------------------------------------------------------------------------------


@st.cache_data(show_spinner="Reading the label file...")
def load_labels(path: str) -> pd.DataFrame:
    """`pipeline.data.label_files.load_labels` of a file, cached by path."""
    return label_files.load_labels(path)


@st.cache_data(show_spinner="Reading the uploaded label file...", max_entries=20)
def load_uploaded_labels(name: str, content: bytes) -> pd.DataFrame:
    """`pipeline.data.label_files.load_labels_bytes` of an upload, cached by its name and bytes."""
    return label_files.load_labels_bytes(content, name)


@st.cache_data(show_spinner="Reading the evaluation...")
def _read_evaluation(path: str, modified: float) -> results.SavedEvaluation:
    return results.read_evaluation(path)


def read_evaluation(path: Path) -> results.SavedEvaluation:
    """`pipeline.evaluation.results.read_evaluation`, cached until the folder's metrics.json is rewritten."""
    return _read_evaluation(str(path), _modified(path / results.METRICS_JSON))


@st.cache_data(show_spinner=False)
def _read_metrics(path: str, modified: float) -> results.Summary:
    return results.read_metrics(path)


def read_metrics(path: Path) -> results.Summary:
    """`pipeline.evaluation.results.read_metrics`, cached until the folder's metrics.json is rewritten."""
    return _read_metrics(str(path), _modified(path / results.METRICS_JSON))


def _modified(path: Path) -> float:
    """A file's mtime, the key that invalidates a cached read (0 for a missing file: the reader says so)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# --- commands shown when something is missing -----------------------------------------------------------------


def _bases() -> list[tuple[Path, str]]:
    """The folders a shown path is made relative to, innermost first, each with the name it is shown under:
    the folders moved by environment variables as ``$VARIABLE`` (a shell with them set resolves it), the
    repository root as nothing (commands are run from there)."""
    bases = [(Path(os.environ[var]), f"${var}") for var in (image_folders.ENV_VAR, paths.ARTIFACTS_ENV,
                                                           paths.NIH_ENV) if os.environ.get(var)]
    bases.append((paths.REPO_ROOT, ""))
    resolved = [(base.expanduser().resolve(), name) for base, name in bases]
    return sorted(resolved, key=lambda pair: -len(pair[0].parts))


def display_path(path: str | Path) -> str:
    """A path relative to the data or artifacts folder (or the repository root), never an absolute server path.

    A path outside all of them is shown by its file name alone.
    """
    target = (paths.REPO_ROOT / Path(path).expanduser()).resolve()
    for base, name in _bases():
        if target.is_relative_to(base):
            relative = target.relative_to(base).as_posix()
            return f"{name}/{relative}" if name else relative
    return target.name


def redact(message: str) -> str:
    """A message with the server's absolute folders replaced as `display_path` shows them."""
    for base, name in _bases():
        for form in {str(base), os.path.abspath(str(base))}:
            message = message.replace(form + os.sep, f"{name}/" if name else "")
    return message


CLI = ".venv/bin/chestxray"  # as the README: works when pasted in the checkout after `make run`, venv active or not
# A new run on the embedded split, as `make demo-model` trains the shipped ones (offline: no ImageNet download).
NEW_RUN = {"train": "nih/train-small.csv", "valid": "nih/valid-small.csv", "images": "nih/images", "image_size": 128,
           "epochs": 30, "batch_size": 16, "lr": 1e-3, "weights": "none", "loss": "weighted", "patience": 8,
           "seed": 0}
# config.json key -> train's flag, for the settings that make a run what it is.
TRAIN_FLAGS = {"train": "--train", "valid": "--valid", "images": "--images", "image_size": "--image-size",
               "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "weights": "--weights",
               "loss": "--loss", "patience": "--patience", "seed": "--seed"}


def _command(words: list[str]) -> str:
    """A shell command line of quoted words, wrapped after about 100 characters with backslashes."""
    lines, line = [], CLI
    for word in map(shlex.quote, words):
        if len(line) + len(word) > 100 and word.startswith("--"):
            lines.append(line + " \\")
            line = "   "
        line += " " + word
    return "\n".join([*lines, line])


def _settings(run_dir: Path | None) -> dict:
    """The run's config.json (unreadable: the settings of a new run; the page shows that error elsewhere)."""
    if run_dir is None:
        return dict(NEW_RUN)
    try:
        config = runs.read_config(run_dir)
    except InputError:
        config = {}
    return config or dict(NEW_RUN)


def train_command(run_dir: Path | None = None) -> str:
    """The command that trains ``run_dir`` again with the settings of its own config.json, or a new demo run."""
    config = _settings(run_dir)
    out = display_path(run_dir or paths.artifacts_dir() / "runs" / "demo")
    words = ["train"]
    for key, flag in TRAIN_FLAGS.items():
        if config.get(key) is not None:
            value = config[key]
            words += [flag, display_path(value) if key in ("train", "valid", "images") else f"{value:g}"
                      if isinstance(value, float) else str(value)]
    init_from = config.get("init_from")
    if isinstance(init_from, dict) and init_from.get("path"):
        words += ["--init-from", display_path(init_from["path"])]
    words += [flag for key, flag in (("mixed_precision", "--mixed-precision"), ("jit_compile", "--jit-compile"))
              if config.get(key)]
    return _command([*words, "--out", out])


def evaluate_command(checkpoint: Path, out: Path) -> str:
    """The command that evaluates a checkpoint on the embedded test set, thresholds chosen on the run's validation
    labels, with the run's image folder (both from its config.json)."""
    config = _settings(checkpoint.parent)
    words = ["evaluate", "--checkpoint", display_path(checkpoint), "--labels", "nih/test.csv"]
    if config.get("images"):
        words += ["--images", display_path(config["images"])]
    words += ["--valid-labels", display_path(config.get("valid", NEW_RUN["valid"])), "--out", display_path(out)]
    return _command(words)


def export_command(run_dir: Path) -> str:
    """The command that adds the ONNX export and the guard's statistics to a run, from its config.json."""
    config = _settings(run_dir)
    words = ["export", "--run", display_path(run_dir)]
    for key in ("train", "valid", "images"):
        if config.get(key):
            words += [f"--{key}", display_path(config[key])]
    return _command(words)


def no_checkpoint_note(run: runs.Run) -> str:
    """Said wherever a run without a checkpoint is shown: its numbers stand, but nothing can be predicted."""
    return (f"Run {run.name} has no checkpoint (no `best.keras` in `{display_path(run.path)}`): its recorded "
            "evaluations and history can be read, but it cannot predict. Train it again with its own settings:")


def explain_missing_run() -> None:
    """Say that no trained run exists and how to make and evaluate one."""
    run_dir = paths.artifacts_dir() / "runs" / "demo"
    st.info(
        f"No trained model yet: there is no run under `{display_path(paths.artifacts_dir() / 'runs')}`. "
        "Train one on the embedded split (from random weights, so it works offline; `--weights imagenet` starts "
        "from ImageNet where it can be downloaded), then evaluate it:"
    )
    st.code(train_command(run_dir) + "\n" + evaluate_command(run_dir / "best.keras", run_dir / "eval-test"),
            language="bash")


# --- the look of charts -------------------------------------------------------------------------------------


def chart(fig: go.Figure) -> None:
    """Show a Plotly figure at the container's width, without the Plotly logo."""
    st.plotly_chart(fig, config={"displaylogo": False})


def env_note() -> str:
    """Where runs are read from, when $CHESTXRAY_ARTIFACTS moves it away from the default."""
    return f" (from ${paths.ARTIFACTS_ENV})" if os.environ.get(paths.ARTIFACTS_ENV) else ""
