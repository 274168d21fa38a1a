"""tf.distribute training (pipeline.training.distribution, pipeline.training.steps) in real processes.

A strategy, a device layout and a dtype policy are fixed per process, so each check runs
`tests/training/distribute_worker.py` in fresh processes: two MultiWorkerMirroredStrategy workers on 127.0.0.1 with
a single-process reference beside them, MirroredStrategy over two logical CPU devices, and DenseNet121 at
64 px under mixed_float16. The tiny model has no BatchNormalization, so distributed and single-device
training do the same arithmetic in another order: losses and weights agree to float32 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import IMAGES, REPO, SMALL_SIZE, free_ports

from pipeline.core.errors import InputError
from pipeline.training import distribution, precision, steps

WORKER = REPO / "tests" / "training" / "distribute_worker.py"
TIMEOUT_S = 300  # a deadlocked collective would wait forever; fail instead
# Relative agreement of distributed and single-device losses and weights: the same float32 sums in another
# order (two partial sums added by the all-reduce) differ by a few ulps, about 1e-7 relative.
RTOL = 1e-5


def _start(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    environment.update({"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    return subprocess.Popen(
        [sys.executable, str(WORKER), *map(str, args)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes: list[subprocess.Popen]) -> None:
    """Wait for all; on a failure or a timeout kill the rest and fail with the output's tail."""
    try:
        for process in processes:
            output, _ = process.communicate(timeout=TIMEOUT_S)
            if process.returncode != 0:
                pytest.fail(f"{' '.join(process.args[2:])} exited {process.returncode}:\n{output[-3000:]}")
    except subprocess.TimeoutExpired:
        pytest.fail(f"distributed run still running after {TIMEOUT_S} s (deadlocked collective?)")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()



def _weights(report, prefix: str) -> list[np.ndarray]:
    count = sum(1 for key in report.files if key.startswith(f"{prefix}_"))
    return [report[f"{prefix}_{i}"] for i in range(count)]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory):
    """Reports and run folders of worker 0 (chief), worker 1 and the single-process reference."""
    root = tmp_path_factory.mktemp("multi_worker")
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    names = ("chief", "worker1", "single")
    for name in names:
        (root / name).mkdir()
    processes = [
        _start(
            "multi-worker",
            root / f"{name}.npz",
            root / name,
            env={"TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})},
        )
        for i, name in enumerate(names[:2])
    ]
    processes.append(_start("multi-worker", root / "single.npz", root / "single"))
    _finish(processes)
    return {name: np.load(root / f"{name}.npz") for name in names}, {name: root / name for name in names}


def test_two_workers_report_the_same_losses_and_end_with_the_same_weights(multi_worker):
    reports, _ = multi_worker
    chief, other = reports["chief"], reports["worker1"]
    assert chief["role"].tolist() == [0, 2, 1] and other["role"].tolist() == [1, 2, 0]
    assert reports["single"]["role"].tolist() == [0, 1, 1]
    np.testing.assert_array_equal(chief["running"], other["running"])
    assert len(chief["running"]) == 3 and np.all(np.isfinite(chief["running"]))
    assert _max_diff(_weights(chief, "trained"), _weights(other, "trained")) == 0.0


def test_first_epoch_loss_matches_a_single_process_run(multi_worker):
    # Same seed, data order and global batch of 8 (the last one short: 4 images, 2 per worker). The global
    # batch is split between the workers and the gradients summed, so only summation order differs.
    reports, _ = multi_worker
    chief, single = reports["chief"], reports["single"]
    np.testing.assert_allclose(chief["running"], single["running"], rtol=RTOL)
    np.testing.assert_allclose(float(chief["epoch_loss"]), float(single["epoch_loss"]), rtol=RTOL)
    for mine, reference in zip(_weights(chief, "trained"), _weights(single, "trained"), strict=True):
        np.testing.assert_allclose(mine, reference, rtol=RTOL, atol=1e-6)


def test_workers_reading_their_own_share_through_a_dataset_function_match_a_single_process(multi_worker):
    reports, _ = multi_worker
    np.testing.assert_array_equal(reports["chief"]["fn_running"], reports["worker1"]["fn_running"])
    np.testing.assert_allclose(reports["chief"]["fn_running"], reports["single"]["running"][:2], rtol=RTOL)


def test_only_the_chief_writes_and_the_save_does_not_block_the_other_worker(multi_worker):
    # The chief saved (and validated) alone while worker 1 already waited in the next collective, and
    # both went on to train and broadcast: a hang would have failed the fixture.
    reports, folders = multi_worker
    assert [p.name for p in folders["chief"].iterdir()] == ["model.keras"]
    assert list(folders["worker1"].iterdir()) == []
    assert reports["chief"]["validation"].shape == (4, 14)
    assert np.all(np.isfinite(reports["chief"]["validation"]))


def test_broadcast_from_chief_gives_every_worker_the_chiefs_weights(multi_worker):
    reports, _ = multi_worker
    chief, other = reports["chief"], reports["worker1"]
    assert _max_diff(_weights(chief, "initial"), _weights(other, "initial")) > 0.1  # worker 1 started elsewhere
    assert _max_diff(_weights(chief, "broadcast"), _weights(other, "broadcast")) == 0.0
    assert _max_diff(_weights(chief, "broadcast"), _weights(chief, "initial")) == 0.0  # the chief's own won
    # Resume: only the chief read the checkpoint (weights and optimizer), then broadcast it.
    assert _max_diff(_weights(chief, "loaded"), _weights(other, "loaded")) > 0.0
    assert _max_diff(_weights(chief, "resumed"), _weights(other, "resumed")) == 0.0
    trained = _weights(chief, "trained")
    assert _max_diff(_weights(other, "resumed")[: len(trained)], trained) == 0.0
    assert int(chief["iterations"]) == int(other["iterations"]) == 3  # the checkpoint's optimizer step


def test_broadcast_numbers_gives_the_chiefs_run_state(multi_worker):
    reports, _ = multi_worker
    for name in ("chief", "worker1"):
        assert reports[name]["numbers"].tolist() == [1.0, 0.01, 0.0]


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    report = tmp_path_factory.mktemp("mirrored") / "report.npz"
    _finish([_start("mirrored", report)])
    return np.load(report)


def test_mirrored_over_two_cpu_devices_matches_the_default_strategy(mirrored):
    assert int(mirrored["replicas"]) == 2
    # Two epochs of 3 steps, the third of each a short batch of 4 (2 per replica).
    np.testing.assert_allclose(mirrored["two_running"], mirrored["one_running"], rtol=RTOL)
    assert float(mirrored["weight_diff"]) < 1e-5


def test_jit_compiled_step_matches_the_plain_step(mirrored):
    np.testing.assert_allclose(mirrored["jit_running"], mirrored["one_running"], rtol=RTOL)
    assert "one device only" in str(mirrored["jit_refused"])


def test_a_per_replica_dataset_function_trains_like_the_global_batch(mirrored):
    # One input pipeline batching 4 per replica: replica 0 and 1 take consecutive batches, the same 8 images.
    np.testing.assert_allclose(mirrored["fn_running"], mirrored["one_running"][:2], rtol=RTOL)


def test_average_over_replicas_reconciles_batch_norm_statistics(mirrored):
    # Keras 3 updates each replica's moving statistics from its own half of the batch: they drift apart.
    before, after = _weights(mirrored, "before"), _weights(mirrored, "after")
    assert max(float(np.abs(b[0] - b[1]).max()) for b in before) > 1e-6
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a[0], a[1])
        np.testing.assert_allclose(a[0], b.mean(axis=0), rtol=1e-6)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    _finish([_start("mixed", folder / "report.npz", folder / "mixed.keras")])
    return np.load(folder / "report.npz"), folder / "mixed.keras"


def test_mixed_precision_trains_with_loss_scaling(mixed):
    report, _ = mixed
    assert str(report["compute_dtype"]) == "float16" and str(report["output_dtype"]) == "float32"
    assert np.all(np.isfinite(report["running"]))
    # The initial scale 2**15 overflows float16 gradients: steps are skipped while it halves, then applied.
    assert float(report["scale"]) < 2.0**15
    assert 1 <= int(report["applied"]) < len(report["running"])
    assert float(report["moved"]) > 0.0


def test_mixed_precision_checkpoint_loads_and_predicts_in_float32(mixed):
    from pipeline.networks import densenet as model_lib

    report, checkpoint = mixed
    assert keras.mixed_precision.global_policy().name == "float32"
    loaded = model_lib.load(checkpoint)
    assert {w.dtype for w in loaded.weights} == {"float32"}
    assert loaded.get_layer("relu").compute_dtype == "float32"
    _, probabilities = model_lib.inference_function(loaded)(_images())
    # The training process predicted with float16 activations (11-bit mantissa, relative rounding 5e-4 per
    # op); in float32 the probabilities differ by that rounding only, measured 3e-5 at most here.
    np.testing.assert_allclose(np.asarray(probabilities), report["probabilities"], atol=1e-3)


def _images() -> np.ndarray:
    """The 20 images `distribute_worker.data` reads: the first NIH images, grayscale, 64 px."""
    import cv2

    files = sorted(IMAGES.glob("*.png"))[:20]
    images = [cv2.resize(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE), (SMALL_SIZE, SMALL_SIZE)) for f in files]
    return np.stack(images)[..., None].astype("float32")


@pytest.mark.parametrize(
    ("tf_config", "words"),
    [
        (None, "needs the TF_CONFIG"),
        ("{cluster", "not JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', "cluster.worker"),
        ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
        ('{"cluster": {"worker": ["a:1"], "chief": ["b:2"]}, "task": {"type": "worker", "index": 0}}', "chief"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "task"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "from 0 to 1"),
    ],
)
def test_bad_tf_config_is_one_line(monkeypatch, tf_config, words):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(InputError, match=words) as error:
        distribution.make_strategy("multi-worker")
    assert "\n" not in str(error.value)


def test_single_process_strategies_and_role():
    with pytest.raises(InputError, match="auto, one, mirrored, multi-worker"):
        distribution.make_strategy("tpu")
    for name in ("one", "auto"):  # this machine has no GPU
        strategy = distribution.make_strategy(name)
        assert strategy.num_replicas_in_sync == 1
        assert distribution.role(strategy) == distribution.WorkerRole(index=0, count=1, is_chief=True)
        assert distribution.broadcast_numbers(strategy, [3.0, 1e-4, 1.0]) == [3.0, 1e-4, 1.0]


def test_mixed_precision_refuses_an_optimizer_without_loss_scaling():
    strategy = distribution.make_strategy("one")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid", dtype="float32")])
    precision.set_mixed_precision(True)
    try:
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        with pytest.raises(InputError, match="LossScaleOptimizer"):
            steps.make_train_step(strategy, model, keras.losses.BinaryCrossentropy(), keras.optimizers.Adam(), 4)
    finally:
        precision.set_mixed_precision(False)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_train_epoch_weights_a_short_last_batch_by_its_images():
    # 10 examples in batches of 4, 4, 2: the epoch loss is the mean over the 10 examples, not over 3 batches.
    import tensorflow as tf

    strategy = distribution.make_strategy("one")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="sigmoid")])
    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    y = (np.arange(20).reshape(10, 2) % 3 == 0).astype("float32")
    loss = keras.losses.BinaryCrossentropy()
    step = steps.make_train_step(strategy, model, loss, keras.optimizers.SGD(0.0), 4)
    quiet = steps.train_epoch(strategy, step, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 3)
    seen: list[tuple[int, float]] = []
    epoch = steps.train_epoch(
        strategy, step, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 3, lambda i, v: seen.append((i, v))
    )
    expected = float(np.mean(keras.losses.binary_crossentropy(y, model(x)).numpy()))
    assert epoch == pytest.approx(expected, rel=1e-6) and quiet == pytest.approx(expected, rel=1e-6)
    assert [i for i, _ in seen] == [0, 1, 2] and seen[-1][1] == pytest.approx(epoch)
    with pytest.raises(InputError, match="ran out after 3 of 4 steps"):
        steps.train_epoch(strategy, step, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 4)
    with pytest.raises(InputError, match="at least 1"):
        steps.train_epoch(strategy, step, tf.data.Dataset.from_tensor_slices((x, y)).batch(4), 0)
