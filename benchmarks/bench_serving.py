"""Time `python -m pipeline predict` on one image in a fresh process: from the ONNX export, and from Keras.

Goal: at most 2 s to the first probability in a fresh process, served from the export (the issue measured
12.5 s for the .keras checkpoint and 4.8 s for torchxrayvision's DenseNet121 on the same kind of machine).
Each side is a new interpreter running the command, timed from launch to exit, several times; the best
is reported, because other jobs share the CPU. The Keras side is the same checkpoint copied into a
folder without its export, so it takes the fallback path. The breakdown (import, session, first
answer) is measured inside one more fresh process.
Run from the repository root: .venv/bin/python -m benchmarks.bench_serving [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = REPO / "artifacts" / "runs" / "densenet121-128-weighted" / "best.keras"
IMAGE = REPO / "nih" / "images" / "00000001_000.png"
GOAL_S = 2.0

BREAKDOWN = """
import time
start = time.perf_counter()
from pipeline.data import imaging
from pipeline.inference import ood
from pipeline.inference import serving
imported = time.perf_counter()
predictor = serving.load_predictor({checkpoint!r})
stats = ood.load({run!r})
loaded = time.perf_counter()
answer = serving.analyse(predictor, stats, [imaging.load_decoded({image!r})])[0]
done = time.perf_counter()
print(f"{{predictor.source}}: import {{imported - start:.2f}} s, load {{loaded - imported:.2f}} s, "
      f"first answer (decode, forward, heatmaps, guard) {{done - loaded:.2f}} s")
"""


def fresh_predict(checkpoint: Path) -> float:
    """Seconds for ``python -m pipeline predict --json`` on one image in a new interpreter."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "predict", "--checkpoint", str(checkpoint), "--json",
                    str(IMAGE)], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keras-repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} cpus, "
          f"Python {platform.python_version()}")
    if not CHECKPOINT.with_suffix(".onnx").is_file():
        sys.exit(f"{CHECKPOINT.with_suffix('.onnx')} is missing: run `python -m pipeline export` first")
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "best.keras"
        shutil.copy(CHECKPOINT, bare)
        export_times = [fresh_predict(CHECKPOINT) for _ in range(args.repeats)]
        keras_times = [fresh_predict(bare) for _ in range(args.keras_repeats)]
        for checkpoint in (CHECKPOINT, bare):
            code = BREAKDOWN.format(checkpoint=str(checkpoint), run=str(checkpoint.parent), image=str(IMAGE))
            subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    best_export, best_keras = min(export_times), min(keras_times)
    print(f"predict, fresh process, from the ONNX export: best {best_export:.2f} s of {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in export_times)})")
    print(f"predict, fresh process, from the .keras checkpoint: best {best_keras:.2f} s of {args.keras_repeats}")
    print(f"export / goal {GOAL_S:.0f} s: {best_export / GOAL_S:.2f} (<= 1 meets it); "
          f"keras / export: {best_keras / best_export:.1f}x")


if __name__ == "__main__":
    main()
