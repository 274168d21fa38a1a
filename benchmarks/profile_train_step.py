"""Where the time of a DenseNet121 training step goes on this CPU: `train`'s TensorFlow step against PyTorch's.

Profiles the same step as `benchmarks.bench_train_step` (random-init DenseNet121, weighted BCE, Adam, float32)
over a few steps after warm-up, with each framework's own profiler, and prints seconds per step by kind of
work: convolutions forward, convolution gradients, batch normalisation, ReLU, the concatenations of the dense
blocks (and their gradients), the optimizer with the other element-wise ops, and the rest.

- TensorFlow: ``tf.profiler`` over the traced step, run with one inter-op thread so that ops do not overlap
  and their times add up to the step (that setting does not change the step's speed here; see
  docs/full-scale.md). Op types are read from the trace (``name:Type``).
- PyTorch: ``torch.profiler`` self CPU time per ``aten::`` op, in the separate environment of
  bench_train_step (``--torch-python``), channels-last memory format (its faster layout on this CPU).

Both frameworks call the same oneDNN convolution kernels here (``ONEDNN_VERBOSE=1`` shows brgconv/jit
avx512_core in both), so the table says whether a gap is in the kernels or around them.
.venv/bin/python -m benchmarks.profile_train_step [--size 224 --batch 16 --steps 3]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_train_step import TORCH_MODEL  # noqa: E402

KINDS = ("convolution forward", "convolution gradients", "batch norm", "relu", "concat", "optimizer + element-wise",
         "pooling + head", "other")

TORCH_PROFILE = r"""
import json, sys, time, collections
import torch
size, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
""" + TORCH_MODEL + r"""
net = net.to(memory_format=torch.channels_last)
x = x.contiguous(memory_format=torch.channels_last)
y = (torch.rand(batch, 14) < 0.2).float()
optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
def step():
    p = torch.sigmoid(net(x))
    loss = -(y * torch.log(p + 1e-7) + (1 - y) * torch.log(1 - p + 1e-7)).sum(1).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
for _ in range(2):
    step()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) / steps
ops = collections.Counter()
for event in prof.key_averages():
    ops[event.key] += event.self_cpu_time_total / 1e6 / steps
print(json.dumps({"name": f"torch {torch.__version__}, {name}", "wall": wall, "ops": ops}))
"""


def tf_kind(op_type: str) -> str:
    """The kind of work of a TensorFlow op type (oneDNN's kernels are prefixed ``_MklNative``)."""
    op = op_type.removeprefix("_MklNative").removeprefix("_Mkl")
    if op.startswith("Conv2DBackprop"):
        return "convolution gradients"
    if op.startswith("Conv2D"):
        return "convolution forward"
    if "BatchNorm" in op:
        return "batch norm"
    if op.startswith("Relu"):
        return "relu"
    if op in ("ConcatV2", "Slice", "ConcatOffset"):  # a concatenation's gradient is one Slice per input
        return "concat"
    if "Pool" in op or op in ("MatMul", "BiasAdd", "BiasAddGrad", "Sigmoid", "SigmoidGrad", "Mean", "Tile"):
        return "pooling + head"
    if op in ("AssignSubVariableOp", "AssignAddVariableOp", "AssignVariableOp", "ReadVariableOp", "Sqrt", "Mul",
              "Sub", "RealDiv", "Square", "Pow", "AddV2", "AddN", "Cast", "Neg", "Maximum", "Minimum"):
        return "optimizer + element-wise"
    return "other"


def torch_kind(op: str) -> str:
    """The kind of work of a PyTorch ``aten::`` op (self time)."""
    if "convolution_backward" in op:
        return "convolution gradients"
    if "convolution" in op or op == "aten::_convolution":
        return "convolution forward"
    if "batch_norm" in op:
        return "batch norm"
    if "relu" in op or "threshold_backward" in op:
        return "relu"
    if op in ("aten::cat", "aten::narrow", "aten::slice"):
        return "concat"
    if "pool" in op or op in ("aten::addmm", "aten::mm", "aten::linear", "aten::sigmoid", "aten::sigmoid_backward"):
        return "pooling + head"
    if op.startswith(("aten::_foreach", "aten::add", "aten::mul", "aten::div", "aten::sqrt", "aten::sub",
                      "aten::lerp", "aten::addcmul", "aten::addcdiv", "aten::zero", "aten::fill")):
        return "optimizer + element-wise"
    return "other"


def profile_tensorflow(size: int, batch: int, steps: int) -> tuple[str, float, dict[str, float]]:
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from benchmarks.bench_train_step import keras_step, real_batch
    from pipeline.networks.losses import WeightedBinaryCrossentropy

    x, y, pos, neg = real_batch(size, batch)
    _, step = keras_step(size, WeightedBinaryCrossentropy(pos, neg), batch, fused=True)
    batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())
    for _ in range(2):
        float(step(batches)[0])
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(steps):
            float(step(batches)[0])
        wall = (time.perf_counter() - start) / steps
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(Path(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True)[0]).read_bytes())
    kinds: collections.Counter[str] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # an op, "scope/name:Type"; not the executor's own events
                    kinds[tf_kind(name.rsplit(":", 1)[1])] += event.duration_ps / 1e12 / steps
    return f"TensorFlow {tf.__version__}, `train`'s step", wall, dict(kinds)


def profile_torch(python: str, size: int, batch: int, steps: int) -> tuple[str, float, dict[str, float]] | None:
    if not Path(python).is_file():
        print(f"torch: skipped, no interpreter at {python} (see benchmarks/bench_train_step.py)")
        return None
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "torch_profile.py"
        script.write_text(TORCH_PROFILE)
        result = subprocess.run([python, str(script), str(size), str(batch), str(steps)], capture_output=True,
                                text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    kinds: collections.Counter[str] = collections.Counter()
    for op, seconds in report["ops"].items():
        kinds[torch_kind(op)] += seconds
    return report["name"], report["wall"], dict(kinds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after two warm-up steps")
    parser.add_argument("--torch-python", default="/tmp/torchenv/bin/python")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cpus, load {os.getloadavg()}; DenseNet121 {args.size} px, batch {args.batch}, float32")
    results = [profile_tensorflow(args.size, args.batch, args.steps)]
    print(f"load {os.getloadavg()}", flush=True)
    peer = profile_torch(args.torch_python, args.size, args.batch, args.steps)
    if peer:
        results.append(peer)
    print(f"load after {os.getloadavg()}; seconds per step (share of the op time)")
    print(f"{'':26s}" + "".join(f"{name.split(',')[0]:>24s}" for name, _, _ in results))
    for kind in KINDS:
        cells = [f"{kinds.get(kind, 0.0):8.3f} ({100 * kinds.get(kind, 0.0) / sum(kinds.values()):4.1f}%)"
                 for _, _, kinds in results]
        print(f"{kind:26s}" + "".join(f"{cell:>24s}" for cell in cells))
    print(f"{'sum of op times':26s}" + "".join(f"{sum(kinds.values()):24.3f}" for _, _, kinds in results))
    print(f"{'step wall time, profiled':26s}" + "".join(f"{wall:24.3f}" for _, wall, _ in results))
    for name, _, _ in results:
        print(f"  {name}")


if __name__ == "__main__":
    main()
