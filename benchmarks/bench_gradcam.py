"""Time the probabilities plus all 14 Grad-CAM maps against one bare forward pass and against 14 tape passes.

Target: `gradcam.heatmaps` (one forward pass, maps from the dense weights) costs at most 1.3x a bare
forward pass. Every side runs the model the same way, as a tf.function traced before timing (the tape
side traces its gradient too), on one image; each is
warmed up, then timed several times (bare and heatmaps in turn), and medians are compared. An eager
``model(x, training=False)`` is timed too, to show what tracing saves.
Run from the repository root: .venv/bin/python -m benchmarks.bench_gradcam [--size 224]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import gradcam, imaging, model
from pipeline.findings import FINDINGS
from tests.gradcam_reference import gradcam_tape  # the textbook version, kept with the tests

IMAGE = Path(__file__).resolve().parent.parent / "nih" / "images" / "00000001_000.png"


def median_times(funcs, repeats: int, warmup: int = 2) -> list[float]:
    """Median seconds of each function; the functions take turns, so a change in machine load hits all alike."""
    for _ in range(warmup):
        for func in funcs:
            func()
    times = [[] for _ in funcs]
    for _ in range(repeats):
        for func, func_times in zip(funcs, times, strict=True):
            start = time.perf_counter()
            func()
            func_times.append(time.perf_counter() - start)
    return [statistics.median(func_times) for func_times in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224, help="model input side in pixels")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tape-repeats", type=int, default=3, help="repeats of the slow 14-tape side")
    args = parser.parse_args()

    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cpus")
    print(f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}")
    keras.utils.set_random_seed(0)
    net = model.build(args.size, weights="none")
    image = imaging.load_image(IMAGE)  # heatmaps resizes it to the input and its maps back to its own size
    x = imaging.resize(image, args.size)[np.newaxis, :, :, np.newaxis].astype(np.float32)
    print(f"random-init DenseNet121 at {args.size} px, image {image.shape[1]}x{image.shape[0]}, batch 1")

    traced = tf.function(lambda x: net(x, training=False), input_signature=[tf.TensorSpec(x.shape, tf.float32)])

    def forward():
        return traced(x).numpy()

    def eager_forward():
        return keras.ops.convert_to_numpy(net(x, training=False))

    def all_maps():
        return gradcam.heatmaps(net, image)

    def tapes():
        return [gradcam_tape(net, image, k) for k in range(len(FINDINGS))]

    bare, one_pass = median_times([forward, all_maps], args.repeats)
    (tape,) = median_times([tapes], args.tape_repeats, warmup=1)
    (eager,) = median_times([eager_forward], 3, warmup=1)
    print(f"eager forward pass, for reference:      {eager * 1e3:8.1f} ms (median of 3)")
    print(f"bare forward pass:                      {bare * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"heatmaps (probabilities + 14 maps):     {one_pass * 1e3:8.1f} ms (median of {args.repeats})")
    print(f"14 GradientTape Grad-CAM passes:        {tape * 1e3:8.1f} ms (median of {args.tape_repeats})")
    print(f"heatmaps / bare forward:  {one_pass / bare:5.2f}x (target <= 1.3x)")
    print(f"14 tapes / heatmaps:      {tape / one_pass:5.2f}x")
    print(f"eager / traced forward:   {eager / bare:5.2f}x")


if __name__ == "__main__":
    main()
