"""A worker that dies stops the others with one line, in bounded time (`pipeline.training.watchdog`).

The heartbeat logic is checked on an in-memory store with short intervals; TensorFlow's key-value store in
two real MultiWorkerMirroredStrategy processes on 127.0.0.1; and the whole behaviour with two real
`python -m pipeline train --strategy multi-worker` processes of the tiny network at 32 px, one of them
SIGKILLed once the chief has committed epoch 1. JAX's side is tests/training/test_jax.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO, free_ports

from pipeline.data import label_files
from pipeline.training import run_folder, watchdog

STOP_WITHIN_S = watchdog.SILENT_S + watchdog.HEARTBEAT_S
"""The stated bound: a survivor of a SIGKILLed worker exits within this many seconds, with one line."""
MARGIN_S = 5.0  # polling and a loaded machine's scheduling
START_TIMEOUT_S = 600  # two fresh TensorFlow processes to the end of epoch 1 on a loaded 2-core machine
BEAT_S, SILENT_S = 0.1, 1.0  # the short intervals of the tests that exercise the heartbeat itself
TF_BEAT_S, TF_SILENT_S = 0.2, 2.0  # the same through TensorFlow: two processes, more room for a loaded machine


def test_a_silent_peer_is_reported_within_the_bound_and_a_beating_one_never():
    """Three watchdogs on one shared store: worker 2 stops beating; 0 and 1 report it, not each other."""
    store: dict[str, str] = {}
    reports: dict[int, tuple[float, str]] = {}
    lock = threading.Lock()

    def reporter(index: int):
        def report(line: str) -> None:
            with lock:
                reports[index] = (time.monotonic(), line)
        return report

    dogs = [watchdog.Watchdog(store.__setitem__, store.get, index, 3, heartbeat_s=BEAT_S, silent_s=SILENT_S,
                              on_silent=reporter(index)) for index in range(3)]
    time.sleep(3 * SILENT_S)  # all beating: nobody is taken for dead, however long
    assert reports == {}
    dogs[2].stop()
    stopped = time.monotonic()
    time.sleep(SILENT_S + 15 * BEAT_S)
    for dog in dogs[:2]:
        dog.stop()
    assert set(reports) == {0, 1}
    for at, line in reports.values():
        assert SILENT_S - 2 * BEAT_S < at - stopped < SILENT_S + 10 * BEAT_S  # room for a loaded machine
        assert line == f"worker 2 of 3 sent no heartbeat for {SILENT_S:.0f} s"


def test_a_store_that_fails_is_no_heartbeat():
    """A peer whose every store call raises (the store's server is gone) is reported; the caller is not hurt."""
    reports: list[str] = []

    def gone(*args: str) -> None:
        raise ConnectionError("store unreachable")

    dog = watchdog.Watchdog(gone, gone, 1, 2, heartbeat_s=BEAT_S, silent_s=SILENT_S, on_silent=reports.append)
    time.sleep(SILENT_S + 4 * BEAT_S)
    dog.stop()
    assert reports == [f"worker 0 of 2 sent no heartbeat for {SILENT_S:.0f} s"]


def test_one_line_and_exit_status_1_when_a_collective_fails():
    """What a survivor prints when its collective fails: one line naming the cause and --resume, status 1."""
    script = (
        "from pipeline.training import watchdog\n"
        "with watchdog.collective():\n"
        "    raise RuntimeError('Socket closed\\nmore detail')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == watchdog.WATCHDOG_EXIT and done.stdout == ""
    assert done.stderr.splitlines() == [
        "error: a collective with the other workers failed (Socket closed); another worker has probably stopped: "
        "restart every worker with --resume"
    ]


# --- TensorFlow: two real processes --------------------------------------------------------------------------

KEY_VALUE_SCRIPT = f"""
import json, sys, time
from pipeline.training import distribution, tf_engine

strategy = distribution.make_strategy("multi-worker")
me = distribution.role(strategy)
reports = []
dog = tf_engine.key_value_watchdog(me.index, me.count, heartbeat_s={TF_BEAT_S}, silent_s={TF_SILENT_S},
                                   on_silent=lambda line: reports.append((time.monotonic(), line)))
distribution.any_worker(strategy, False)
if me.is_chief:  # busy outside collectives (validating, saving) far longer than the silence allowed
    time.sleep({2.5 * TF_SILENT_S})
distribution.any_worker(strategy, False)  # worker 1 waits here for the chief meanwhile
busy = list(reports)
if me.is_chief:  # alive, but no longer beating: only the heartbeat can tell
    dog.stop()
    time.sleep({3 * TF_SILENT_S})  # the store lives in the chief: keep it up while worker 1 watches
    silent_after = None
else:
    stopped = time.monotonic()
    time.sleep({TF_SILENT_S + 15 * TF_BEAT_S})
    dog.stop()
    silent_after = reports[0][0] - stopped if reports else None
print(json.dumps({{"busy": [line for _, line in busy], "silent_after": silent_after,
                  "lines": [line for _, line in reports]}}), flush=True)
"""



def _tf_workers(commands: list[list[str]], logs: list[Path]) -> list[subprocess.Popen]:
    """Python ``commands`` as the workers of one TensorFlow cluster on 127.0.0.1, worker 0 (the chief) first."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(len(commands))]
    processes = []
    for index, (args, log) in enumerate(zip(commands, logs, strict=True)):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow"}
        with open(log, "w") as output:
            processes.append(subprocess.Popen([sys.executable, *args], cwd=REPO, stdout=output,
                                              stderr=subprocess.STDOUT, env=env))
    return processes


def test_tensorflow_key_value_store_carries_the_heartbeat(tmp_path):
    """TensorFlow's coordination-service store, from the watchdog's threads: a chief busy outside collectives
    keeps beating; a live worker that stops beating is reported within the bound (TensorFlow sees nothing)."""
    logs = [tmp_path / "chief.log", tmp_path / "other.log"]
    processes = _tf_workers([["-c", KEY_VALUE_SCRIPT]] * 2, logs)
    try:
        for process in processes:
            process.wait(timeout=START_TIMEOUT_S)
    finally:
        for process in processes:
            process.kill()
    reports = []
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log.read_text()[-3000:]
        reports.append(json.loads(log.read_text().strip().splitlines()[-1]))
    assert reports[0]["busy"] == [] and reports[1]["busy"] == []
    assert reports[1]["lines"] == [f"worker 0 of 2 sent no heartbeat for {TF_SILENT_S:.0f} s"]
    assert 0 < reports[1]["silent_after"] < TF_SILENT_S + 10 * TF_BEAT_S


def _train_args(train: Path, valid: Path, out: Path) -> list[str]:
    return [
        "-m", "pipeline", "train", "--train", str(train), "--valid", str(valid), "--images", str(IMAGES),
        "--out", str(out), "--weights", "none", "--network", "tiny", "--image-size", "32", "--batch-size", "8",
        "--epochs", "100", "--patience", "100", "--no-export", "--strategy", "multi-worker",
    ]


def _rows(run: Path) -> int:
    try:
        return len(pd.read_csv(run / run_folder.HISTORY))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, Path]:
    """16 training and 16 validation images of the embedded split, as course-format CSVs."""
    folder = tmp_path_factory.mktemp("split")
    paths = folder / "train.csv", folder / "valid.csv"
    course = label_files.to_course_format
    course(label_files.load_labels(NIH / "train-small.csv").head(16)).to_csv(paths[0], index=False)
    course(label_files.load_labels(NIH / "valid-small.csv").head(16)).to_csv(paths[1], index=False)
    return paths


@pytest.mark.parametrize(("victim", "how"), [(1, signal.SIGKILL), (0, signal.SIGKILL), (0, signal.SIGSTOP)],
                         ids=["other-killed", "chief-killed", "chief-frozen"])
def test_a_killed_tensorflow_worker_stops_the_other_with_one_line(split, tmp_path, victim, how):
    """Two `train --strategy multi-worker` processes; SIGKILL one after epoch 1, the other stops in time.

    SIGSTOP stands for a machine gone from the network: its connections stay open and it answers nothing.
    """
    outs = [tmp_path / "chief", tmp_path / "other"]
    logs = [tmp_path / "chief.log", tmp_path / "other.log"]
    processes = _tf_workers([_train_args(*split, out) for out in outs], logs)
    survivor = 1 - victim
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while _rows(outs[0]) < 1:  # the chief has committed epoch 1: both are mid-training
            assert all(p.poll() is None for p in processes), "\n".join(log.read_text()[-3000:] for log in logs)
            assert time.monotonic() < deadline, f"no epoch in {START_TIMEOUT_S} s:\n{logs[0].read_text()[-3000:]}"
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 2
        killed_at = time.monotonic()
        processes[victim].send_signal(how)
        processes[survivor].wait(timeout=STOP_WITHIN_S + 30)
        took = time.monotonic() - killed_at
    finally:
        for process in processes:
            process.kill()
            process.wait()
    lines = [line for line in logs[survivor].read_text().splitlines() if line.strip()]
    assert processes[survivor].returncode == watchdog.WATCHDOG_EXIT, "\n".join(lines[-30:])
    assert took < STOP_WITHIN_S + MARGIN_S
    assert not any("Traceback" in line for line in lines)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1]
    # TensorFlow's own verdict (its cause in brackets) or, should it be late, the heartbeat's
    assert errors[0].startswith(("error: a collective with the other workers failed (", "error: worker "))
    assert errors[0].endswith("another worker has probably stopped: restart every worker with --resume")
    assert run_folder.read_state(outs[0]).epoch >= 1  # what the chief committed stays, for --resume
    print(f"survivor {survivor} stopped {took:.1f} s after {how.name} of {victim}: {errors[0]}")
