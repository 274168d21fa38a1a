"""Time `train`'s training step against a bare Keras ``train_on_batch`` loop and a plain PyTorch step.

All sides train a random-init DenseNet121 (``pipeline.networks.densenet.build(size, "none")``, 14 sigmoid outputs) with
Adam on ``batch`` images of ``size`` px, with the class-weighted loss (PyTorch: the same formula):

- ``step, in memory``: `pipeline.training.steps.make_train_step` under the default strategy, as `train` runs it, fed
  one fixed batch of real NIH images from memory (a repeated ``tf.data`` of one element);
- ``step, prepared``: the same traced step fed by `pipeline.data.input_pipeline.training_batches` from a prepared folder
  of real NIH images made here in a temporary folder (decoding and augmentation included), to show whether
  the input costs anything;
- ``step, Keras BN``: the in-memory step with Keras's own BatchNormalization (`pipeline.networks.batchnorm` off), to
  show what the fused kernel gives;
- ``train_on_batch``: ``model.compile(Adam, loss)`` and ``model.train_on_batch`` with Keras's own
  BatchNormalization, i.e. the model as plain Keras trains it;
- ``torch``: torchvision's DenseNet121 (random init, 1-channel input copied to 3, 14 outputs) with
  ``torch.optim.Adam`` in a subprocess of a separate environment (``--torch-python``, default
  ``/tmp/torchenv/bin/python``; PyTorch is not a dependency of this project; skipped with a message when that
  interpreter is missing). It waits for a line on stdin per step, so its steps take turns with the others.
  It runs with ``OMP_WAIT_POLICY=PASSIVE`` (``--torch-spin`` to leave OpenMP's default): on cores shared with
  other processes, OpenMP's spinning threads made a 64 px step 10-20x slower here (4.5-8.9 s against 0.3-0.4 s).

Every side is warmed up (tracing), then the sides take turns step by step, so a change in machine load (other
processes share the cores) hits all alike; medians are compared. Run from the repository root:
.venv/bin/python -m benchmarks.bench_train_step [--size 224 --batch 16 --repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline.data import imaging, input_pipeline, prepare  # noqa: E402
from pipeline.data.label_files import label_matrix, load_labels  # noqa: E402
from pipeline.networks import batchnorm, densenet  # noqa: E402
from pipeline.networks.losses import WeightedBinaryCrossentropy  # noqa: E402
from pipeline.training import steps  # noqa: E402

LABELS = REPO / "nih" / "train-small.csv"
IMAGES = REPO / "nih" / "images"
TORCH_PYTHON = "/tmp/torchenv/bin/python"

TORCH_STEP = r"""
import sys, time
import torch, torchvision
size, batch = int(sys.argv[1]), int(sys.argv[2])
pos = torch.tensor([float(v) for v in sys.argv[3].split(",")])
neg = torch.tensor([float(v) for v in sys.argv[4].split(",")])
torch.manual_seed(0)
net = torchvision.models.densenet121(weights=None, num_classes=14)
net.train()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
x = torch.rand(batch, 1, size, size) * 255
y = (torch.rand(batch, 14) < 0.2).float()
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    p = torch.sigmoid(net((x.expand(-1, 3, -1, -1) / 255 - mean) / std))
    loss = -(pos * y * torch.log(p + 1e-7) + neg * (1 - y) * torch.log(1 - p + 1e-7)).sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    print(time.perf_counter() - start, loss.item(), flush=True)
"""


def real_batch(size: int, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``batch`` real NIH images and their labels, and the class weights of the small training split."""
    table = load_labels(LABELS, IMAGES)
    rows = table.iloc[:batch]
    x = np.stack([imaging.resize(imaging.load_image(IMAGES / name), size) for name in rows["Image"]])
    y = label_matrix(rows).astype(np.float32)
    labels = label_matrix(table)
    pos, neg = 1.0 - labels.mean(axis=0), labels.mean(axis=0)  # the formula of pipeline.data.label_files.class_weights
    return x[..., np.newaxis].astype(np.float32), y, pos, neg


def keras_step(size: int, loss: keras.losses.Loss, batch: int, fused: bool) -> tuple[keras.Model, Callable]:
    """The project's traced step (`pipeline.training.steps.make_train_step`) on a fresh model, default strategy."""
    keras.utils.set_random_seed(0)
    net = densenet.build(size, "none")
    batchnorm.set_fused(net, fused)
    optimizer = keras.optimizers.Adam(1e-4)
    step = steps.make_train_step(tf.distribute.get_strategy(), net, loss, optimizer, batch)
    return net, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each side")
    parser.add_argument("--torch-python", default=TORCH_PYTHON, help="interpreter of an environment with torch")
    parser.add_argument("--torch-spin", action="store_true", help="leave OpenMP's default (spinning) wait policy")
    parser.add_argument("--skip", nargs="*", default=[], help="sides to leave out: prepared keras-bn tob torch")
    args = parser.parse_args()
    size, batch = args.size, args.batch

    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()}")
    print(f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    print(
        f"threads: intra {tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores), inter "
        f"{tf.config.threading.get_inter_op_parallelism_threads()}, TF_ENABLE_ONEDNN_OPTS="
        f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (on)')}"
    )
    print(f"random-init DenseNet121, {size} px, batch {batch}, weighted BCE, Adam")
    x, y, pos, neg = real_batch(size, batch)
    loss = WeightedBinaryCrossentropy(pos, neg)
    sides: dict[str, Callable[[], float]] = {}

    _, step = keras_step(size, loss, batch, fused=True)
    memory = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    sides["step, in memory"] = lambda: float(step(memory)[0])

    workdir = tempfile.TemporaryDirectory(prefix="bench_train_step_")
    if "prepared" not in args.skip:
        folder = Path(workdir.name) / "prepared"
        prepare.prepare(LABELS, IMAGES, folder, size, workers=2, log=lambda line: None)
        source = input_pipeline.open_source(folder)
        total = 1000 * (args.repeats + 4)  # more steps than the benchmark takes
        prepared = iter(input_pipeline.training_batches(source, size, batch, total, seed=0))
        sides["step, prepared"] = lambda: float(step(prepared)[0])  # same trace, another input
        print(f"prepared folder: {len(source)} real NIH images at {size} px, augmentation on")

    if "keras-bn" not in args.skip:
        _, plain_step = keras_step(size, loss, batch, fused=False)
        plain_memory = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        sides["step, Keras BN"] = lambda: float(plain_step(plain_memory)[0])

    if "tob" not in args.skip:
        keras.utils.set_random_seed(0)
        bare = densenet.build(size, "none")
        batchnorm.set_fused(bare, False)  # Keras's own layers: the model as plain Keras trains it
        bare.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
        sides["train_on_batch"] = lambda: float(bare.train_on_batch(x, y))

    torch = None
    if "torch" not in args.skip:
        if Path(args.torch_python).is_file():
            script = Path(workdir.name) / "torch_step.py"
            script.write_text(TORCH_STEP)
            weights = [",".join(f"{v:.6f}" for v in w) for w in (pos, neg)]
            torch = subprocess.Popen(
                [args.torch_python, str(script), str(size), str(batch), *weights],
                stdin=subprocess.PIPE,
                env={**os.environ, **({} if args.torch_spin else {"OMP_WAIT_POLICY": "PASSIVE"})},
                stdout=subprocess.PIPE,
                text=True,
            )
            policy = os.environ.get("OMP_WAIT_POLICY", "default") if args.torch_spin else "PASSIVE"
            print(f"{torch.stdout.readline().strip()}, OMP_WAIT_POLICY {policy}")

            def torch_step() -> float:
                torch.stdin.write("step\n")
                torch.stdin.flush()
                return float(torch.stdout.readline().split()[0])  # its own timing, without the pipe

            sides["torch"] = torch_step
        else:
            print(
                f"torch: skipped, no interpreter at {args.torch_python} (python3 -m venv /tmp/torchenv && "
                "/tmp/torchenv/bin/pip install torch torchvision)"
            )

    for name, side in sides.items():  # first calls trace (TensorFlow) or allocate (PyTorch)
        start = time.perf_counter()
        side()
        side()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s for 2 steps", flush=True)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, side in sides.items():
            start = time.perf_counter()
            seconds = side()
            times[name].append(seconds if name == "torch" else time.perf_counter() - start)
    if torch is not None:
        torch.stdin.close()
        torch.wait()
    workdir.cleanup()

    print(f"\nload after: {os.getloadavg()}; medians of {args.repeats} steps (min-max)")
    medians = {name: statistics.median(values) for name, values in times.items()}
    ours = medians["step, in memory"]
    for name, values in times.items():
        line = f"  {name:16s} {medians[name]:6.2f} s/step ({min(values):.2f}-{max(values):.2f})  "
        line += f"{batch / medians[name]:6.2f} images/s"
        if name != "step, in memory":
            line += f"   `train`'s step (in memory) is {medians[name] / ours:.2f}x as fast"
        print(line)


if __name__ == "__main__":
    main()
