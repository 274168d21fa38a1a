"""Training on real NIH images with a real DenseNet121 at 64 px: artifacts, SIGKILL and --resume, refusals.

One run is shared by most tests, because tracing DenseNet121's training step costs a minute or more on a
small CPU: `python -m pipeline train` is started in a subprocess, killed with SIGKILL during its second
epoch, and resumed in this process to its third and last epoch. The same run, uninterrupted, trains in a
second subprocess alongside, as the reference the resumed run must match.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO, SMALL_SIZE

from pipeline import cli, data, train
from pipeline import model as model_lib
from pipeline.errors import InputError
from pipeline.findings import FINDINGS
from pipeline.losses import WeightedBinaryCrossentropy

N_TRAIN, N_VALID, BATCH, EPOCHS = 40, 16, 8, 3
STEPS = -(-N_TRAIN // BATCH)
START_TIMEOUT_S = 600  # first epoch of a fresh process, tracing included, on a loaded 2-core machine


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, Path]:
    """40 training and 16 validation images of the embedded split, as course-format CSVs."""
    folder = tmp_path_factory.mktemp("split")
    train_csv, valid_csv = folder / "train.csv", folder / "valid.csv"
    data.to_course_format(data.load_labels(NIH / "train-small.csv").head(N_TRAIN)).to_csv(train_csv, index=False)
    data.to_course_format(data.load_labels(NIH / "valid-small.csv").head(N_VALID)).to_csv(valid_csv, index=False)
    return train_csv, valid_csv


def _command(train_csv: Path, valid_csv: Path, out: Path) -> list[str]:
    return [
        *("train", "--train", str(train_csv), "--valid", str(valid_csv), "--images", str(IMAGES), "--out", str(out)),
        *("--weights", "none", "--image-size", str(SMALL_SIZE), "--epochs", str(EPOCHS), "--batch-size", str(BATCH)),
    ]


def _wait_for(condition, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training exited early with {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training made no progress in {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _history_rows(run: Path) -> int:
    try:
        return len(pd.read_csv(run / train.HISTORY))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", *command], cwd=REPO, stdout=output, stderr=subprocess.STDOUT
        )


def _resume(train_csv: Path, valid_csv: Path, out: Path, log) -> pd.DataFrame:
    """Continue the test run in ``out`` in this process, with the settings it was started with."""
    return train.train(
        train_csv, valid_csv, IMAGES, out, image_size=SMALL_SIZE, epochs=EPOCHS, batch_size=BATCH, weights="none",
        resume=True, log=log,
    )


@pytest.fixture(scope="module")
def run(split, tmp_path_factory) -> dict:
    """A run killed with SIGKILL during epoch 2, what it left, its completion by ``resume=True``, and the same
    run uninterrupted (trained alongside in a second process: tracing the model is mostly one-core work).
    """
    train_csv, valid_csv = split
    runs = tmp_path_factory.mktemp("runs")
    out, straight_out = runs / "killed", runs / "straight"
    straight = _start(_command(train_csv, valid_csv, straight_out), runs / "straight.log")
    killed = _start(_command(train_csv, valid_csv, out), runs / "killed.log")
    try:
        # Epoch 1 is complete once its history row is written; a moment later epoch 2 is training.
        _wait_for(lambda: _history_rows(out) == 1, killed, runs / "killed.log", START_TIMEOUT_S)
        time.sleep(0.5)
        assert killed.poll() is None, "the run ended before it could be killed"
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    left = {
        "state": json.loads((out / train.STATE).read_text()),
        "history": pd.read_csv(out / train.HISTORY),
        "files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()),
    }
    lines: list[str] = []
    try:
        history = _resume(train_csv, valid_csv, out, lines.append)
        straight.wait(timeout=START_TIMEOUT_S)
    finally:
        straight.kill()
    assert straight.returncode == 0, (runs / "straight.log").read_text()[-3000:]
    return {
        "out": out,
        "train_csv": train_csv,
        "valid_csv": valid_csv,
        "left": left,
        "history": history,
        "log": lines,
        "uninterrupted": pd.read_csv(straight_out / train.HISTORY),
    }


def test_killed_run_left_its_first_epoch_intact(run):
    left = run["left"]
    assert left["state"]["epoch"] == 1
    assert left["state"]["optimizer_iterations"] == STEPS
    assert list(left["history"]["epoch"]) == [1]
    assert {"config.json", "state.json", "history.csv", "best.keras", "checkpoints/epoch-001.keras"} <= set(
        left["files"]
    )


def test_resume_completes_every_epoch_exactly_once(run):
    out, history = run["out"], run["history"]
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert list(history.columns) == train.HISTORY_COLUMNS
    on_disk = pd.read_csv(out / train.HISTORY)
    pd.testing.assert_frame_equal(on_disk, history, check_dtype=False)
    assert history.loc[0, "val_mean_auc"] == pytest.approx(run["left"]["history"].loc[0, "val_mean_auc"])
    assert history["val_mean_auc"].between(0, 1).all() and np.isfinite(history[["loss", "val_loss"]]).all().all()
    assert history["val_auc_Pneumothorax"].isna().all()  # no positive among the 16 validation images
    assert any(line.startswith("resuming") and "after epoch 1" in line for line in run["log"])
    assert any(line.startswith(f"epoch {EPOCHS}/{EPOCHS}  loss ") and "val_mean_auc" in line for line in run["log"])

    state = json.loads((out / train.STATE).read_text())
    assert state["epoch"] == EPOCHS
    assert state["history"] == json.loads(json.dumps(state["history"]))
    best = history.loc[history["val_mean_auc"].idxmax()]
    assert state["best_epoch"] == best["epoch"] and state["best_auc"] == pytest.approx(best["val_mean_auc"])


def test_resumed_run_matches_the_uninterrupted_one(run):
    """Same data order, augmentation, weights, optimizer state and learning rate after the kill as without it."""
    numbers = [column for column in train.HISTORY_COLUMNS if column != "seconds"]
    resumed, uninterrupted = run["history"][numbers], run["uninterrupted"][numbers]
    np.testing.assert_allclose(resumed.to_numpy(float), uninterrupted.to_numpy(float), rtol=1e-5, equal_nan=True)


def test_only_the_last_two_checkpoints_and_no_temporary_files_remain(run):
    out = run["out"]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "best.keras",
        f"checkpoints/epoch-{EPOCHS - 1:03d}.keras",
        f"checkpoints/epoch-{EPOCHS:03d}.keras",
        "config.json",
        "history.csv",
        "state.json",
    ]


def test_optimizer_state_continues_across_the_kill(run):
    """One optimizer step per batch of every epoch, counted on from the checkpoint written before the kill.

    Resuming checks the loaded checkpoint's step against state.json; a fresh optimizer would end at 2 epochs' worth.
    """
    state = json.loads((run["out"] / train.STATE).read_text())
    assert state["optimizer_iterations"] == EPOCHS * STEPS
    with zipfile.ZipFile(run["out"] / f"checkpoints/epoch-{EPOCHS:03d}.keras") as checkpoint:
        compiled = json.loads(checkpoint.read("config.json"))["compile_config"]
    assert compiled["optimizer"]["class_name"] == "Adam"
    assert compiled["loss"]["class_name"] == "WeightedBinaryCrossentropy"


def test_best_checkpoint_reproduces_its_validation_auc(run):
    """Reloaded, best.keras gives the predictions that earned its epoch the best validation AUC."""
    out = run["out"]
    state = json.loads((out / train.STATE).read_text())
    best = model_lib.load(out / train.BEST)
    valid = data.load_labels(run["valid_csv"], IMAGES)
    images = np.stack([x for x, _ in train.decoded_dataset(valid, IMAGES, SMALL_SIZE).as_numpy_iterator()])
    probabilities = best.predict(images.astype(np.float32), batch_size=BATCH, verbose=0)
    assert model_lib.finding_names(best) == list(FINDINGS)
    mean_auc, _ = train.validation_auc(data.label_matrix(valid), probabilities)
    assert mean_auc == pytest.approx(state["best_auc"], abs=1e-6)
    kept = out / f"checkpoints/epoch-{state['best_epoch']:03d}.keras"
    if kept.is_file():
        assert kept.read_bytes() == (out / train.BEST).read_bytes()


def test_config_records_settings_data_and_versions(run):
    config = json.loads((run["out"] / train.CONFIG).read_text())
    expected = {"image_size": SMALL_SIZE, "epochs": EPOCHS, "batch_size": BATCH, "lr": 1e-4, "weights": "none"}
    assert {key: config[key] for key in expected} == expected
    assert config["loss"] == "weighted" and config["patience"] == 5 and config["seed"] == 0
    for part in ("train", "valid"):
        path = run[f"{part}_csv"]
        assert config[part] == str(path)
        assert config[f"{part}_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (config["n_train"], config["n_valid"]) == (N_TRAIN, N_VALID)
    freq_pos, freq_neg = data.compute_class_freqs(data.load_labels(run["train_csv"]))
    assert list(config["train_freq_pos"]) == list(FINDINGS)
    np.testing.assert_allclose(list(config["train_freq_pos"].values()), freq_pos)
    np.testing.assert_allclose(list(config["loss_weights"]["pos"].values()), freq_neg)
    assert set(config["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    assert config["versions"]["keras"] == keras.__version__
    assert config["augmentation"]["horizontal_flip"] is False
    assert [entry["after_epoch"] for entry in config["resumed"]] == [1]


def test_refuses_to_overwrite_a_run_without_resume(run, capsys):
    code = cli.main(_command(run["train_csv"], run["valid_csv"], run["out"]))
    assert code == 2
    error = capsys.readouterr().err
    assert "already holds a training run" in error and "--resume" in error and len(error.strip().splitlines()) == 1


def test_resume_refuses_other_data_or_settings(run, tmp_path):
    changed = tmp_path / "valid.csv"
    pd.read_csv(run["valid_csv"]).head(N_VALID - 1).to_csv(changed, index=False)
    common = {"epochs": EPOCHS, "batch_size": BATCH, "weights": "none", "resume": True, "log": lambda line: None}
    with pytest.raises(InputError, match="validation CSV differs"):
        train.train(run["train_csv"], changed, IMAGES, run["out"], image_size=SMALL_SIZE, **common)
    with pytest.raises(InputError, match="image_size 64 -> 96"):
        train.train(run["train_csv"], run["valid_csv"], IMAGES, run["out"], image_size=96, **common)
    with pytest.raises(InputError, match="no run to resume"):
        train.train(run["train_csv"], run["valid_csv"], IMAGES, tmp_path / "empty", image_size=SMALL_SIZE, **common)


def test_resuming_a_complete_run_trains_nothing(run):
    before = (run["out"] / train.STATE).read_bytes()
    lines: list[str] = []
    history = _resume(run["train_csv"], run["valid_csv"], run["out"], lines.append)
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert (run["out"] / train.STATE).read_bytes() == before
    assert "already complete" in lines[-1]


def test_loss_choice_and_its_record_in_the_config(split):
    train_csv, valid_csv = split
    train_table, valid_table = data.load_labels(train_csv), data.load_labels(valid_csv)
    freq_pos, freq_neg = data.compute_class_freqs(train_table)

    weighted = train.make_loss("weighted", train_table)
    assert isinstance(weighted, WeightedBinaryCrossentropy)
    np.testing.assert_allclose(weighted.pos_weights, freq_neg)
    np.testing.assert_allclose(weighted.neg_weights, freq_pos)
    assert isinstance(train.make_loss("plain", train_table), keras.losses.BinaryCrossentropy)

    settings = {"train": str(train_csv), "valid": str(valid_csv), "loss": "plain"}
    plain = train.run_config(settings, train_table, valid_table)
    assert plain["loss"] == "plain" and plain["loss_weights"] is None
    weighted_config = train.run_config({**settings, "loss": "weighted"}, train_table, valid_table)
    np.testing.assert_allclose(list(weighted_config["loss_weights"]["neg"].values()), freq_pos)


def test_epochs_are_seeded_and_augmented_without_flips(split):
    table = data.load_labels(split[0]).head(12)
    images = train.decoded_dataset(table, IMAGES, SMALL_SIZE)

    def epoch(seed: int) -> np.ndarray:
        return np.concatenate([x for x, _ in train.training_batches(images, len(table), 4, seed).as_numpy_iterator()])

    first = epoch(1)
    assert first.shape == (12, SMALL_SIZE, SMALL_SIZE, 1) and first.dtype == np.float32
    assert first.min() >= 0 and first.max() <= 255
    np.testing.assert_array_equal(epoch(1), first)  # what a resumed run relies on
    assert not np.array_equal(epoch(2), first)
    layers = [type(layer).__name__ for layer in train.augmentation(0).layers]
    assert layers == ["RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast"]


def test_plateau_halves_the_learning_rate_and_patience_stops():
    state = train._initial_state(lr=1e-3, seed=0)
    lrs, stops = [], []
    for epoch, auc in enumerate([0.60, 0.65, 0.64, 0.63, 0.62, 0.66, 0.61, 0.61, 0.61, 0.61], start=1):
        lrs.append(state["lr"])
        state = train._next_state(state, {"epoch": epoch, "val_mean_auc": auc}, f"epoch-{epoch:03d}.keras", epoch)
        stops.append(train._finished(state, epochs=100, patience=4))
    # Halved after every 2 epochs without a gain (epochs 4 and 8); the gain at epoch 6 resets both counters.
    assert lrs == [1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4]
    assert (state["best_epoch"], state["best_auc"]) == (6, 0.66)
    assert stops.index(True) == 9  # epoch 10, the fourth without a gain since epoch 6


def test_validation_auc_skips_findings_without_both_classes():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.2], [0.4, 0.3], [0.5, 0.4]])
    mean_auc, aucs = train.validation_auc(y, p)
    assert aucs == [0.75, None] and mean_auc == 0.75


def test_bad_options_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="--epochs 0"):
        train.train("a.csv", "b.csv", tmp_path, tmp_path / "run", epochs=0)
    with pytest.raises(InputError, match="--image-size 16"):
        train.train("a.csv", "b.csv", tmp_path, tmp_path / "run", image_size=16)
    assert not os.path.exists(tmp_path / "run")
