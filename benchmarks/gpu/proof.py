"""GPU proof kit: prepare a realistic input and train DenseNet121 on JAX, printing what a GPU machine delivers.

Run by `benchmarks/gpu/run.sh` (see `benchmarks/gpu/README.md`) with ``KERAS_BACKEND=jax``, on a machine that
may lack TensorFlow. In order, it

1. links ``--entries`` metadata names (the first rows of NIH's Data_Entry file) to the embedded NIH images of
   ``nih/images`` in turn, and prepares them at ``--image-size`` on every core (`pipeline.data.prepare`):
   prepare's images/s;
2. reads training batches from that folder (`pipeline.data.input_pipeline.training_arrays`, augmentation on):
   the input pipeline's own images/s on this machine, without a model;
3. for each batch size and precision (float32, and bfloat16 mixed precision: ``mixed_bfloat16``, float32
   variables), compiles one DenseNet121 training step with ``jax.jit`` (the project's model and class-weighted
   loss; Adam), reports the compile time apart, then times ``--steps`` steps fed by the input pipeline:
   training images/s, peak device memory (``memory_stats``), and the step's FLOPs as XLA counts them
   (``compiled.cost_analysis()``), as TFLOP/s and as a share of the card's dense bfloat16 peak;
4. runs ``python -m pipeline train`` for one short epoch under the same backend, to show the command itself
   runs there (reported as failed, with its last error line, where that command does not support JAX yet).

Nothing is estimated: a figure that cannot be read on this machine (peak memory on a CPU) is printed as n/a.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NIH = REPO / "nih"
METADATA = REPO / "pipeline" / "metadata" / "Data_Entry_2017_v2020.csv.gz"  # shipped with the package
H200_BF16_TFLOPS = 989.0  # dense bfloat16, NVIDIA's H200 SXM datasheet; --peak-tflops for another card


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def link_entries(folder: Path, entries: int) -> Path:
    """A label file of the first ``entries`` metadata rows, each image a link to an embedded NIH image in turn."""
    import pandas as pd

    table = pd.read_csv(METADATA, nrows=entries)
    sources = sorted((NIH / "images").glob("*.png"))
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(table["Image Index"]):
        os.symlink(sources[k % len(sources)], images / name)
    labels = folder / "labels.csv"
    table.to_csv(labels, index=False)
    return labels


def build_model(image_size: int, kind: str = "densenet121"):
    """The project's DenseNet121 (`pipeline.networks.densenet.build`), random weights; where that module cannot
    be imported without TensorFlow, the same architecture from `keras.applications` (and says so). ``tiny``: a
    three-layer network through the same step, for the kit's own test on a CPU (where XLA compiles DenseNet121
    for minutes)."""
    if kind == "tiny":
        import keras

        inputs = keras.Input((image_size, image_size, 1))
        x = keras.layers.Rescaling(1 / 255)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(14, activation="sigmoid", dtype="float32")(x)
        return keras.Model(inputs, outputs), "tiny (3 layers; not DenseNet121)"
    try:
        from pipeline.networks import densenet
    except ImportError as exc:
        import keras

        inputs = keras.Input((image_size, image_size, 1))
        x = keras.layers.Concatenate()([inputs, inputs, inputs])
        x = keras.layers.Rescaling(1 / 255)(x)
        backbone = keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x, pooling="avg")
        outputs = keras.layers.Dense(14, activation="sigmoid", dtype="float32")(backbone.output)
        return keras.Model(inputs, outputs), f"keras.applications.DenseNet121 (project model: {exc})"
    return densenet.build(image_size, weights="none"), "pipeline.networks.densenet"


def train_step_rate(
    source, image_size: int, batch: int, steps: int, precision: str, peak_tflops: float, kind: str = "densenet121"
) -> dict:
    """Compile one jitted training step, then time ``steps`` of them on input-pipeline batches."""
    import jax
    import keras
    import numpy as np

    from pipeline.data import input_pipeline, label_files
    from pipeline.networks import losses

    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    keras.utils.set_random_seed(0)
    model, origin = build_model(image_size, kind)
    keras.config.set_dtype_policy("float32")
    loss_fn = losses.make_loss("weighted", label_files.label_matrix(source.table))
    optimizer = keras.optimizers.Adam(1e-4)
    optimizer.build(model.trainable_variables)

    def compute_loss(trainable, non_trainable, x, y):
        predictions, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, keras.ops.cast(predictions, "float32")), non_trainable

    gradient = jax.value_and_grad(compute_loss, has_aux=True)

    def step(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return loss, (trainable, non_trainable, optimizer_variables)

    state = (
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    )
    batches = input_pipeline.training_arrays(source, image_size, batch, steps + 2, seed=0, epoch=0)
    x, y = next(batches)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, x, y).compile()
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan"))) if cost else float("nan")

    loss, state = compiled(state, x, y)  # first run: allocations and autotuning, not timed
    loss.block_until_ready()
    arrays = [next(batches)]  # one batch ahead; the pipeline's own threads build the rest meanwhile
    start = time.perf_counter()
    for _ in range(steps):
        x, y = arrays.pop()
        loss, state = compiled(state, jax.device_put(x), jax.device_put(y))
        arrays.append(next(batches, (x, y)))
    final = float(loss)
    seconds = time.perf_counter() - start
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    tflops = flops * steps / seconds / 1e12
    return {
        "model": origin,
        "batch": batch,
        "precision": precision,
        "compile_s": compile_seconds,
        "images_per_s": batch * steps / seconds,
        "step_ms": 1000 * seconds / steps,
        "flops_per_image": flops / batch,
        "tflops": tflops,
        "share_of_peak": tflops / peak_tflops,
        "peak_memory_gib": None if peak is None else peak / 2**30,
        "loss": final,
        "finite": bool(np.isfinite(final)),
    }


def input_rate(source, image_size: int, batch: int, count: int) -> float:
    """Images/s of ``count`` augmented training batches after the first (the pipeline's threads started)."""
    from pipeline.data import input_pipeline

    batches = input_pipeline.training_arrays(source, image_size, batch, count + 1, seed=1, epoch=0)
    next(batches)
    start = time.perf_counter()
    images = sum(len(y) for _, y in batches)
    return images / (time.perf_counter() - start)


def train_command(tmp: Path, labels: Path, image_size: int, batch: int, workers: int, kind: str) -> str:
    """``python -m pipeline train`` for one epoch of ``4 x batch`` images; one line saying how it went.

    ``kind`` ``tiny`` trains `--network tiny` (the kit's CPU test), else the project's DenseNet121."""
    import pandas as pd

    from pipeline.data import prepare

    table = pd.read_csv(labels)
    parts = {"train": table.iloc[: 4 * batch], "valid": table.iloc[4 * batch : 4 * batch + 256]}
    folders = {}
    for part, rows in parts.items():
        rows.to_csv(tmp / f"{part}.csv", index=False)
        folders[part] = tmp / f"prepared-{part}"
        prepare.prepare(
            tmp / f"{part}.csv", tmp / "images", folders[part], image_size, workers=workers, log=lambda line: None
        )
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "train",
        "--train",
        str(folders["train"]),
        "--valid",
        str(folders["valid"]),
        "--out",
        str(tmp / "run"),
        "--image-size",
        str(image_size),
        "--epochs",
        "1",
        "--batch-size",
        str(batch),
        "--weights",
        "none",
        "--no-export",
        *(["--network", "tiny"] if kind == "tiny" else []),
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seconds = time.perf_counter() - start
    if result.returncode == 0:
        epoch = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
        return f"ok in {seconds:.0f} s ({epoch[-1] if epoch else 'no epoch line'})"
    last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"FAILED (exit {result.returncode}) after {seconds:.0f} s: {last[:300]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="metadata rows linked and prepared")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-sizes", default="256", help="comma-separated, e.g. 128,256")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per configuration")
    parser.add_argument("--input-batches", type=int, default=60, help="batches timed for the input alone")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="prepare's processes")
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_TFLOPS, help="the card's dense bf16 peak")
    parser.add_argument("--model", choices=["densenet121", "tiny"], default="densenet121")
    parser.add_argument("--no-train-command", dest="train_command", action="store_false")
    args = parser.parse_args()
    started = time.perf_counter()

    import jax
    import keras

    from pipeline.data import input_pipeline, prepare

    tf_present = "tensorflow" in sys.modules or _importable("tensorflow")
    device = jax.devices()[0]
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {load()}")
    print(
        f"JAX {jax.__version__} on {device.platform}: {device.device_kind} x {len(jax.devices())}; Keras "
        f"{keras.__version__} ({keras.backend.backend()}); TensorFlow {'present' if tf_present else 'absent'}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        labels = link_entries(tmp, args.entries)
        start = time.perf_counter()
        manifest = prepare.prepare(
            labels, tmp / "images", tmp / "prepared", args.image_size, workers=args.workers, log=lambda line: None
        )
        seconds = time.perf_counter() - start
        print(
            f"prepare: {manifest.n_images:,} images at {args.image_size} px with {args.workers} processes in "
            f"{seconds:.1f} s: {manifest.n_images / seconds:,.0f} images/s ({load()})"
        )
        source = input_pipeline.open_source(tmp / "prepared")
        rows = []
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            rate = input_rate(source, args.image_size, batch, args.input_batches)
            print(
                f"input pipeline alone, batch {batch}, augmented: {rate:,.0f} images/s "
                f"({input_pipeline.THREADS} threads, {load()})"
            )
            for precision in args.precisions.split(","):
                row = train_step_rate(
                    source, args.image_size, batch, args.steps, precision, args.peak_tflops, args.model
                )
                if not rows:
                    print(f"model: {row['model']}")
                memory = "n/a" if row["peak_memory_gib"] is None else f"{row['peak_memory_gib']:.1f} GiB"
                print(
                    f"train {precision:8s} batch {batch}: {row['images_per_s']:,.0f} images/s "
                    f"({row['step_ms']:.0f} ms/step over {args.steps} steps; "
                    f"compile {row['compile_s']:.0f} s apart), "
                    f"{row['flops_per_image'] / 1e9:.3g} GFLOP/image by XLA's count, {row['tflops']:.3g} TFLOP/s "
                    f"= {100 * row['share_of_peak']:.3g} % of {args.peak_tflops:g} TFLOP/s bf16 peak, "
                    f"peak memory {memory}, loss {row['loss']:.3f} ({load()})"
                )
                rows.append(row)
        if args.train_command:
            batch = int(args.batch_sizes.split(",")[0])
            line = train_command(tmp, labels, args.image_size, batch, args.workers, args.model)
            print(f"python -m pipeline train (KERAS_BACKEND={keras.backend.backend()}, one epoch): {line}")
    print(f"proof kit finished in {time.perf_counter() - started:.0f} s wall time")
    return 0 if rows and all(row["finite"] for row in rows) else 1


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
