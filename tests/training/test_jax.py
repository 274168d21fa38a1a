"""`train` under KERAS_BACKEND=jax: the same run folder and checkpoints as TensorFlow, resume, distribution.

The backend is fixed when Keras is first imported and this test process runs TensorFlow, so every JAX run is
a real subprocess (`python -m pipeline train` with KERAS_BACKEND=jax). The runs use the tiny network
(`--network tiny`: the same code around one convolution block) on 16 NIH images at 32 px, so each JAX
process compiles in seconds; they start together in one fixture and run side by side.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO, free_ports

from pipeline import cli
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files
from pipeline.networks import densenet
from pipeline.training import jax_engine, run_folder, watchdog

SIZE, BATCH, EPOCHS = 32, 8, 3
N_TRAIN, N_VALID = 16, 16
STEPS = N_TRAIN // BATCH
TIMEOUT_S = 900  # a fresh process on a loaded 2-core machine, compiling included

FIRST_STEP_RTOL = 1e-4
"""JAX and TensorFlow start from the same checkpoint on the same first batch: their first-step losses differ
by float rounding only (TensorFlow's fused BatchNormalization sums in another order); measured below 1e-6."""

DEVICES_RTOL = 1e-4
"""Two CPU devices in one process against one: DataParallel shards the batch, but the computation is the
global one (BatchNormalization's statistics are all-reduced), so only the summation order differs."""

EXPORT_ATOL = 1e-4
"""ONNX Runtime (the export made by TensorFlow) against the JAX model itself, per probability."""

STOP_WITHIN_S = watchdog.SILENT_S + watchdog.HEARTBEAT_S
"""The stated bound: a survivor of a SIGKILLed worker exits within this many seconds, with one line."""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), **extra}
    env.pop("XLA_FLAGS", None)
    return {**env, **extra}


def _train_args(train: Path, valid: Path, out: Path, epochs: int = EPOCHS) -> list[str]:
    return [
        sys.executable, "-m", "pipeline", "train", "--train", str(train), "--valid", str(valid),
        "--images", str(IMAGES), "--out", str(out), "--weights", "none", "--network", "tiny",
        "--image-size", str(SIZE), "--epochs", str(epochs), "--batch-size", str(BATCH),
    ]


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "a") as output:
        return subprocess.Popen(args, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, env=env)


def _rows(run: Path) -> int:
    try:
        return len(pd.read_csv(run / run_folder.HISTORY))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def _wait_rows(run: Path, rows: int, process: subprocess.Popen, log: Path, poll: float = 0.05) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while _rows(run) < rows:
        assert process.poll() is None, f"exited early with {process.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no progress in {TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
        time.sleep(poll)


def _finish(process: subprocess.Popen, log: Path) -> None:
    try:
        process.wait(timeout=TIMEOUT_S)
    finally:
        process.kill()
    assert process.returncode == 0, log.read_text()[-3000:]



def _numbers(history: pd.DataFrame) -> np.ndarray:
    return history[[c for c in run_folder.HISTORY_COLUMNS if c != "seconds"]].to_numpy(float)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """16 training and 16 validation images of the embedded split, and one batch of training images."""
    folder = tmp_path_factory.mktemp("split")
    course = label_files.to_course_format
    paths = {name: folder / f"{name}.csv" for name in ("train", "valid", "one_batch")}
    course(label_files.load_labels(NIH / "train-small.csv").head(N_TRAIN)).to_csv(paths["train"], index=False)
    course(label_files.load_labels(NIH / "valid-small.csv").head(N_VALID)).to_csv(paths["valid"], index=False)
    course(label_files.load_labels(NIH / "train-small.csv").head(BATCH)).to_csv(paths["one_batch"], index=False)
    return paths


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> dict:
    """Every JAX run of this module, started together:

    - ``straight``: 3 epochs uninterrupted, exported for serving at the end (through a TensorFlow subprocess);
    - ``killed``: the same run, SIGKILLed during epoch 2, resumed with --resume;
    - ``first_jax`` / ``first_tf``: one step from the same checkpoint under each backend;
    - ``devices``: 2 epochs over two forced CPU devices, then resumed to 3.
    """
    folder = tmp_path_factory.mktemp("jax")
    train, valid, one_batch = data["train"], data["valid"], data["one_batch"]
    import keras

    keras.utils.set_random_seed(1)
    densenet.save(densenet.build(SIZE, "none", "tiny"), folder / "init.keras")
    one_step = ["--init-from", str(folder / "init.keras"), "--epochs", "1", "--no-export"]

    out = {name: folder / name for name in ("straight", "killed", "first_jax", "first_tf", "devices")}
    logs = {name: folder / f"{name}.log" for name in out}
    two_devices = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
    processes = {
        "straight": _start(_train_args(train, valid, out["straight"]), logs["straight"], _env()),
        "killed": _start([*_train_args(train, valid, out["killed"]), "--no-export"], logs["killed"], _env()),
        "first_jax": _start([*_train_args(one_batch, valid, out["first_jax"]), *one_step], logs["first_jax"],
                            _env()),
        "first_tf": _start([*_train_args(one_batch, valid, out["first_tf"]), *one_step], logs["first_tf"],
                           _env(KERAS_BACKEND="tensorflow")),
        "devices": _start([*_train_args(train, valid, out["devices"], epochs=2), "--no-export"], logs["devices"],
                          two_devices),
    }
    try:
        # killed the moment epoch 1's history row appears (written last of its files): the tiny network's next
        # epoch takes a few tenths of a second, so a fixed pause could outlast the whole run on a quiet machine
        _wait_rows(out["killed"], 1, processes["killed"], logs["killed"], poll=0.002)
        assert processes["killed"].poll() is None, "the run ended before it could be killed"
        processes["killed"].send_signal(signal.SIGKILL)
        processes["killed"].wait()
        left = run_folder.read_state(out["killed"])
        processes["killed"] = _start([*_train_args(train, valid, out["killed"]), "--no-export", "--resume"],
                                     logs["killed"], _env())
        _finish(processes["devices"], logs["devices"])
        processes["devices"] = _start([*_train_args(train, valid, out["devices"]), "--no-export", "--resume"],
                                      logs["devices"], two_devices)
        for name, process in processes.items():
            _finish(process, logs[name])
    finally:
        for process in processes.values():
            process.kill()
    return {"out": out, "logs": logs, "left": left, "valid": valid}


def test_same_first_step_loss_under_jax_and_tensorflow(runs):
    jax_run, tf_run = (runs["out"][name] for name in ("first_jax", "first_tf"))
    losses = [pd.read_csv(run / run_folder.HISTORY).loc[0, "loss"] for run in (jax_run, tf_run)]
    assert losses[0] == pytest.approx(losses[1], rel=FIRST_STEP_RTOL)
    configs = [json.loads((run / run_folder.CONFIG).read_text()) for run in (jax_run, tf_run)]
    assert [c["backend"] for c in configs] == ["jax", "tensorflow"]
    assert configs[0]["network"] == "tiny" and configs[0]["init_from"] == configs[1]["init_from"]


def test_jax_resume_after_a_kill_matches_the_uninterrupted_run(runs):
    out, straight = runs["out"]["killed"], runs["out"]["straight"]
    assert runs["left"].epoch == 1 and runs["left"].optimizer_iterations == STEPS
    resumed, uninterrupted = (pd.read_csv(run / run_folder.HISTORY) for run in (out, straight))
    assert list(resumed["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(_numbers(resumed), _numbers(uninterrupted), rtol=1e-5, equal_nan=True)
    state = run_folder.read_state(out)
    assert (state.epoch, state.optimizer_iterations) == (EPOCHS, EPOCHS * STEPS)
    config = json.loads((out / run_folder.CONFIG).read_text())
    assert config["backend"] == "jax" and config["strategy"] == {"name": "one", "replicas": 1, "workers": 1}
    assert [(entry["after_epoch"], entry["backend"]) for entry in config["resumed"]] == [(1, "jax")]
    assert "resuming" in runs["logs"]["killed"].read_text()
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert [name for name in files if not name.startswith("tensorboard/")] == [
        "best.keras", "checkpoints/epoch-002.keras", "checkpoints/epoch-003.keras", "config.json", "history.csv",
        "state.json",
    ]
    assert run_folder._logged_epochs(out / run_folder.TENSORBOARD) == EPOCHS  # tensorboardX wrote every epoch


def test_jax_checkpoint_is_evaluated_and_served_under_tensorflow_with_the_same_probabilities(runs, tmp_path):
    """The JAX run's export at the end (made by TensorFlow) and a TensorFlow evaluation agree with JAX itself."""
    run = runs["out"]["straight"]
    log = runs["logs"]["straight"].read_text()
    assert "served by" in log and (run / "best.onnx").is_file() and (run / "typicality.npz").is_file()
    images = sorted(IMAGES.glob("*.png"))[:6]
    script = (
        "import sys, numpy as np; from pipeline.networks import densenet; from pipeline.data import imaging\n"
        "m = densenet.load(sys.argv[1]); x = np.stack([imaging.resize(imaging.load_image(p), 32) for p in "
        "sys.argv[3:]])[..., None].astype('float32'); np.save(sys.argv[2], densenet.inference_function(m)(x)[1])"
    )
    jax_out = tmp_path / "jax.npy"
    done = subprocess.run([sys.executable, "-c", script, str(run / run_folder.BEST), str(jax_out), *map(str, images)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    in_jax = np.load(jax_out)

    from pipeline.inference import serving

    onnx = serving.load_predictor(run / run_folder.BEST)
    assert onnx.source != "keras"
    from pipeline.data import imaging

    decoded = [imaging.load_decoded(path) for path in images]
    served = np.stack([answer.probabilities for answer in serving.analyse(onnx, None, decoded)])
    np.testing.assert_allclose(served, in_jax, atol=EXPORT_ATOL)

    code = cli.main(["evaluate", "--checkpoint", str(run / run_folder.BEST), "--labels", str(runs["valid"]),
                     "--images", str(IMAGES), "--out", str(tmp_path / "eval"), "--bootstrap", "20"])
    assert code == 0
    evaluated = pd.read_csv(tmp_path / "eval" / "predictions.csv").set_index("Image")
    script_paths = [IMAGES / name for name in evaluated.index]
    done = subprocess.run([sys.executable, "-c", script, str(run / run_folder.BEST), str(jax_out),
                           *map(str, script_paths)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(evaluated[list(FINDINGS)].to_numpy(), np.load(jax_out), atol=EXPORT_ATOL)


def test_two_cpu_devices_in_one_process_train_and_resume_like_one_device(runs):
    out = runs["out"]["devices"]
    config = json.loads((out / run_folder.CONFIG).read_text())
    assert config["strategy"] == {"name": "mirrored", "replicas": 2, "workers": 1}
    assert [entry["after_epoch"] for entry in config["resumed"]] == [2]
    history = pd.read_csv(out / run_folder.HISTORY)
    single = pd.read_csv(runs["out"]["straight"] / run_folder.HISTORY)
    assert list(history["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(history["loss"], single["loss"], rtol=DEVICES_RTOL)


def _workers(train: Path, valid: Path, outs: list[Path], logs: list[Path], epochs: int, *extra: str):
    port = free_ports(1)[0]
    processes = []
    for index, (out, log) in enumerate(zip(outs, logs, strict=True)):
        env = _env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
        args = [*_train_args(train, valid, out, epochs), "--strategy", "multi-worker", "--no-export", *extra]
        processes.append(_start(args, log, env))
    return processes


@pytest.mark.parametrize("victim", [1, 0])
def test_two_processes_stop_with_one_line_when_one_is_killed_and_resume(data, tmp_path, victim):
    """Two jax.distributed processes on 127.0.0.1 (gloo); SIGKILL one during epoch 2, the other stops in time.

    Its last line is ours, or, when process 0 died and jax.distributed's client noticed first, JAX's own abort
    line (exit 134; docs/distributed.md says why it stays).
    """
    outs, logs = [tmp_path / "chief", tmp_path / "other"], [tmp_path / "chief.log", tmp_path / "other.log"]
    processes = _workers(data["train"], data["valid"], outs, logs, 100, "--patience", "100")
    survivor = 1 - victim
    try:
        _wait_rows(outs[0], 1, processes[0], logs[0])
        time.sleep(0.3)
        killed_at = time.monotonic()
        processes[victim].send_signal(signal.SIGKILL)
        processes[survivor].wait(timeout=STOP_WITHIN_S + 30)
        took = time.monotonic() - killed_at
    finally:
        for process in processes:
            process.kill()
            process.wait()
    assert took < STOP_WITHIN_S
    lines = [line for line in logs[survivor].read_text().splitlines() if line.strip()]
    assert not any("Traceback" in line for line in lines)
    errors = [line for line in lines if line.startswith("error:")]
    if processes[survivor].returncode == watchdog.WATCHDOG_EXIT:
        assert len(errors) == 1 and errors[0] == lines[-1] and "restart every worker with --resume" in errors[0]
    else:
        assert victim == 0 and processes[survivor].returncode == -signal.SIGABRT and not errors
        assert any("This most likely indicates that another task died" in line for line in lines)

    done = run_folder.read_state(outs[0]).epoch
    processes = _workers(data["train"], data["valid"], outs, logs, done + 1, "--resume")
    for process, log in zip(processes, logs, strict=True):
        _finish(process, log)
    assert not outs[1].exists()  # only process 0 writes the run folder
    config = json.loads((outs[0] / run_folder.CONFIG).read_text())
    assert config["strategy"] == {"name": "multi-worker", "replicas": 2, "workers": 2}
    assert [entry["after_epoch"] for entry in config["resumed"]] == [done]
    history = pd.read_csv(outs[0] / run_folder.HISTORY)
    assert list(history["epoch"]) == list(range(1, done + 2)) and np.isfinite(history["loss"]).all()
    assert run_folder.read_state(outs[0]).optimizer_iterations == (done + 1) * STEPS


def test_multi_worker_settings_are_checked_in_one_line():
    with pytest.raises(Exception, match="JAX_NUM_PROCESSES"):
        jax_engine.cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "0"})
    with pytest.raises(Exception, match="use 0 to 1"):
        jax_engine.cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                     "JAX_PROCESS_ID": "2"})
    assert jax_engine.cluster_from_env({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2",
                                        "JAX_PROCESS_ID": "1"}) == ("h:1", 2, 1)
