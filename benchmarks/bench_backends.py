"""`train`'s speed on this machine under each Keras backend: TensorFlow (the CPU default) and JAX (for the record).

Prepares 48 training and 16 validation images of the embedded split at 224 px once, then runs the real command,
``python -m pipeline train`` (DenseNet121, random init, batch 16, 2 epochs, no export), once per backend in its
own process, and reads the seconds of each epoch from the run's history.csv: epoch 1 holds the compile, epoch 2
is the steady state (3 training steps and the validation pass over 16 images). Prints the load beside each
figure; run it twice on a quiet machine.

.venv/bin/python -m benchmarks.bench_backends
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.data import label_files, prepare  # noqa: E402

SIZE, BATCH, N_TRAIN, N_VALID = 224, 16, 48, 16


def load() -> str:
    return "load " + " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for part, source, n in (("train", "train-small.csv", N_TRAIN), ("valid", "valid-small.csv", N_VALID)):
            table = label_files.to_course_format(label_files.load_labels(REPO / "nih" / source).head(n))
            table.to_csv(folder / f"{part}.csv", index=False)
            prepare.prepare(folder / f"{part}.csv", REPO / "nih" / "images", folder / part, SIZE, workers=2,
                            log=lambda line: None)
        for backend in ("tensorflow", "jax"):
            out = folder / f"run-{backend}"
            before = load()
            result = subprocess.run(
                [sys.executable, "-m", "pipeline", "train", "--train", str(folder / "train"), "--valid",
                 str(folder / "valid"), "--out", str(out), "--image-size", str(SIZE), "--epochs", "2",
                 "--batch-size", str(BATCH), "--weights", "none", "--no-export"],
                cwd=REPO, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": backend},
            )
            if result.returncode != 0:
                print(f"{backend}: FAILED: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            seconds = pd.read_csv(out / "history.csv")["seconds"].tolist()
            print(f"{backend:<10} epoch 1 (compile + 3 steps + validation) {seconds[0]:6.1f} s; "
                  f"epoch 2 {seconds[1]:6.1f} s = {N_TRAIN / seconds[1]:.1f} training images/s with validation "
                  f"({before} -> {load()})")


if __name__ == "__main__":
    main()
