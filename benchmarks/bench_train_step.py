"""Time `train`'s training step against a bare Keras ``train_on_batch`` loop and a plain PyTorch step.

All sides train a random-init DenseNet121 (``pipeline.networks.densenet.build(size, "none")``, 14 sigmoid outputs) with
Adam on ``batch`` images of ``size`` px, with the class-weighted loss (PyTorch: the same formula):

- ``step, float32``: `pipeline.training.steps.make_train_step` under the default strategy, as `train` runs it, fed
  one fixed batch of real NIH images from memory (a repeated ``tf.data`` of one element);
- ``step, prepared``: the same traced step fed by `pipeline.data.input_pipeline.training_batches` from a prepared folder
  of real NIH images made here in a temporary folder (decoding and augmentation included), to show whether
  the input costs anything;
- ``step, Keras BN``: the in-memory step with Keras's own BatchNormalization (`pipeline.networks.batchnorm` off), to
  show what the fused kernel gives;
- ``train_on_batch``: ``model.compile(Adam, loss)`` and ``model.train_on_batch`` with Keras's own
  BatchNormalization, i.e. the model as plain Keras trains it;
- ``step, mixed_bfloat16`` / ``step, mixed_float16``: the in-memory step under those Keras policies (float16
  with the loss-scaling optimizer, as `train --mixed-precision` runs under TensorFlow);
- ``torch, ...``: torchxrayvision's DenseNet121 (random init, one input channel, 14 outputs; torchvision's when
  torchxrayvision is absent) with ``torch.optim.Adam``, each setting in its own subprocess of a separate
  environment (``--torch-python``, default ``/tmp/torchenv/bin/python``; PyTorch is not a dependency of this
  project; skipped with a message when that interpreter is missing), at PyTorch's best settings on this CPU:
  channels-last memory format (1.3-1.4x faster than its default NCHW, also measured) with OpenMP's default
  waiting and with ``OMP_WAIT_POLICY=PASSIVE`` (better on cores shared with other processes), and bfloat16
  autocast. Each waits for a line on stdin per step, so its steps take turns with the others.

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
OURS, OURS_BF16, TORCH_BF16 = "step, float32", "step, mixed_bfloat16", "torch, bfloat16"
SKIPPABLE = ("prepared", "keras-bn", "tob", "bf16", "fp16", "torch")

# PyTorch's side (also `benchmarks.profile_train_step`'s): ``net``, ``name`` and an input ``x`` for ``size``, ``batch``.
TORCH_MODEL = r"""
torch.manual_seed(0)
try:  # the issue's peer: torchxrayvision's DenseNet121, one input channel
    import torchxrayvision as xrv
    net, name = xrv.models.DenseNet(weights=None, num_classes=14, in_channels=1), "torchxrayvision DenseNet121"
    x = torch.rand(batch, 1, size, size) * 2048 - 1024  # its input range
except ImportError:
    import torchvision
    net, name = torchvision.models.densenet121(weights=None, num_classes=14), "torchvision DenseNet121"
    x = torch.rand(batch, 3, size, size)
net.train()
"""

TORCH_STEP = r"""
import sys, time
import torch
size, batch = int(sys.argv[1]), int(sys.argv[2])
pos = torch.tensor([float(v) for v in sys.argv[3].split(",")])
neg = torch.tensor([float(v) for v in sys.argv[4].split(",")])
channels_last, bf16 = "channels-last" in sys.argv[5:], "bf16" in sys.argv[5:]
""" + TORCH_MODEL + r"""
if channels_last:
    net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
y = (torch.rand(batch, 14) < 0.2).float()
print(f"torch {torch.__version__}, {name}, {torch.get_num_threads()} threads", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = net(x)
    p = torch.sigmoid(logits.float())
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


def keras_step(size: int, loss: keras.losses.Loss, batch: int, fused: bool,
               policy: str = "float32") -> tuple[keras.Model, Callable]:
    """The project's traced step (`pipeline.training.steps.make_train_step`) on a fresh model, default strategy,
    built under the Keras dtype ``policy`` (``mixed_float16`` gets the loss-scaling optimizer, as in `train`)."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(policy)
    try:
        net = densenet.build(size, "none")
        batchnorm.set_fused(net, fused)
        optimizer = keras.optimizers.Adam(1e-4)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        step = steps.make_train_step(tf.distribute.get_strategy(), net, loss, optimizer, batch)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return net, step


class TorchSide:
    """A PyTorch step in its own process (``TORCH_STEP``), one step per line written to its stdin."""

    def __init__(self, python: str, script: Path, size: int, batch: int, weights: list[str], options: list[str],
                 env: dict[str, str]) -> None:
        self.process = subprocess.Popen([python, str(script), str(size), str(batch), *weights, *options],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, **env})
        self.banner = self.process.stdout.readline().strip()

    def __call__(self) -> float:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline().split()[0])  # its own timing, without the pipe

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps of each side")
    parser.add_argument("--torch-python", default=TORCH_PYTHON, help="interpreter of an environment with torch")
    parser.add_argument("--skip", nargs="*", default=[], choices=SKIPPABLE, metavar="SIDE",
                        help=f"sides to leave out: {' '.join(SKIPPABLE)}")
    args = parser.parse_args()
    size, batch, skip = args.size, args.batch, set(args.skip)

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

    def add_keras(name: str, fused: bool = True, policy: str = "float32") -> None:
        _, step = keras_step(size, loss, batch, fused, policy)
        memory = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
        sides[name] = lambda: float(step(memory)[0])

    add_keras(OURS)
    workdir = tempfile.TemporaryDirectory(prefix="bench_train_step_")
    if "prepared" not in skip:
        _, step = keras_step(size, loss, batch, fused=True)
        folder = Path(workdir.name) / "prepared"
        prepare.prepare(LABELS, IMAGES, folder, size, workers=2, log=lambda line: None)
        source = input_pipeline.open_source(folder)
        total = 1000 * (args.repeats + 4)  # more steps than the benchmark takes
        prepared = iter(input_pipeline.training_batches(source, size, batch, total, seed=0))
        sides["step, prepared"] = lambda: float(step(prepared)[0])
        print(f"prepared folder: {len(source)} real NIH images at {size} px, augmentation on")
    if "keras-bn" not in skip:
        add_keras("step, Keras BN", fused=False)
    if "tob" not in skip:
        keras.utils.set_random_seed(0)
        bare = densenet.build(size, "none")
        batchnorm.set_fused(bare, False)  # Keras's own layers: the model as plain Keras trains it
        bare.compile(optimizer=keras.optimizers.Adam(1e-4), loss=loss)
        sides["train_on_batch"] = lambda: float(bare.train_on_batch(x, y))
    if "bf16" not in skip:
        add_keras(OURS_BF16, policy="mixed_bfloat16")
    if "fp16" not in skip:
        add_keras("step, mixed_float16", policy="mixed_float16")

    torches: list[TorchSide] = []
    if "torch" not in skip and not Path(args.torch_python).is_file():
        print(f"torch: skipped, no interpreter at {args.torch_python} (python3 -m venv /tmp/torchenv && "
              "/tmp/torchenv/bin/pip install torch torchvision torchxrayvision)")
    elif "torch" not in skip:
        script = Path(workdir.name) / "torch_step.py"
        script.write_text(TORCH_STEP)
        weights = [",".join(f"{v:.6f}" for v in w) for w in (pos, neg)]
        configs = [
            ("torch, OpenMP default", ["channels-last"], {}),
            ("torch, passive", ["channels-last"], {"OMP_WAIT_POLICY": "PASSIVE"}),
            ("torch, NCHW", [], {}),
        ]
        if "bf16" not in skip:
            configs.append((TORCH_BF16, ["channels-last", "bf16"], {}))
        for name, options, env in configs:
            side = TorchSide(args.torch_python, script, size, batch, weights, options, env)
            torches.append(side)
            sides[name] = side
        print(f"{torches[0].banner}; channels-last memory format except 'torch, NCHW'")

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
            times[name].append(seconds if isinstance(side, TorchSide) else time.perf_counter() - start)
    for side in torches:
        side.close()
    workdir.cleanup()

    print(f"\nload after: {os.getloadavg()}; medians of {args.repeats} steps (min-max)")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        line = f"  {name:22s} {medians[name]:6.2f} s/step ({min(values):.2f}-{max(values):.2f})  "
        line += f"{batch / medians[name]:6.2f} images/s"
        if name != OURS:
            line += f"   `train`'s float32 step is {medians[name] / medians[OURS]:.2f}x as fast"
        print(line)
    float32_torch = [medians[name] for name in medians if name.startswith("torch, ") and name != TORCH_BF16]
    if float32_torch:
        print(f"float32: `train`'s step is {min(float32_torch) / medians[OURS]:.2f}x as fast as PyTorch's best")
    if OURS_BF16 in medians and TORCH_BF16 in medians:
        print(f"bfloat16: `train`'s step is {medians[TORCH_BF16] / medians[OURS_BF16]:.2f}x as fast as PyTorch's")


if __name__ == "__main__":
    main()
