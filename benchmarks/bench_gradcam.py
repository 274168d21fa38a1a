"""Time the probabilities plus all 14 Grad-CAM maps against one bare forward pass and against 14 tape passes.

Target: `gradcam.heatmaps` (one forward pass, maps from the dense weights) costs at most 1.3x a bare
forward pass. Every side runs the model the same way, as a tf.function traced before timing (the tape
side traces its gradient too), on one image; each is
warmed up, then timed several times (bare and heatmaps in turn), and medians are compared. An eager
``model(x, training=False)`` is timed too, to show what tracing saves.
The out-of-distribution guard (`pipeline.inference.ood.judge`: pixel checks, polarity, typicality from the pooled
features the same pass returned) is timed against the heatmaps too (target: at most 10% of a prediction),
with the shipped demo run's statistics, and against a whole served answer from the demo run's ONNX export.
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

from pipeline.core.findings import FINDINGS
from pipeline.data import imaging
from pipeline.explain import gradcam
from pipeline.inference import ood, serving
from pipeline.networks import densenet
from tests.explain.gradcam_reference import gradcam_tape  # the textbook version, kept with the tests

REPO = Path(__file__).resolve().parent.parent
IMAGE = REPO / "nih" / "images" / "00000001_000.png"
DEMO = REPO / "artifacts" / "runs" / "densenet121-128-weighted"


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
    net = densenet.build(args.size, weights="none")
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

    stats = ood.load(DEMO)
    if stats is None:
        print(f"no typicality statistics in {DEMO}: guard not timed")
        return
    decoded = imaging.load_decoded(IMAGE)
    features, _ = densenet.inference_function(net)(x)
    pooled = features.mean(axis=(1, 2))

    def guard():
        return ood.judge(decoded, image, pooled, stats)

    predictor = serving.load_predictor(DEMO / "best.keras")

    def served():  # the whole answer of the demo run's export, guard included
        return serving.analyse(predictor, stats, [decoded])

    def served_without_guard():
        return predictor.forward([image])

    judge, maps_again = median_times([guard, all_maps], args.repeats)
    answer, forward_only = median_times([served, served_without_guard], args.repeats)
    print(f"guard (pixel checks + polarity + typicality): {judge * 1e3:6.2f} ms (median of {args.repeats})")
    print(f"guard / heatmaps at {args.size} px (TensorFlow):    {judge / maps_again:6.1%} (target <= 10%)")
    print(f"served answer, demo export ({predictor.source}, {predictor.input_size} px): {answer * 1e3:6.1f} ms; "
          f"forward pass alone {forward_only * 1e3:6.1f} ms; guard / answer {judge / answer:6.1%}")


if __name__ == "__main__":
    main()
