"""Time the bootstrap AUC intervals at the size of the official NIH test set.

1,000 resamples x 14 findings x 25,596 images, with the test set's label prevalences and scores of a
mediocre model rounded to 4 decimals (so that ties occur, as with float16/float32 outputs). The target is
10 s on a 2-core machine::

    .venv/bin/python benchmarks/bench_bootstrap.py [--resamples 1000] [--images 25596] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.core.findings import FINDINGS  # noqa: E402
from pipeline.evaluation.metrics import bootstrap_auc  # noqa: E402

TARGET_S = 10.0
# Positives per finding in the official test list (test_list.txt, 25,596 images), FINDINGS order.
TEST_POSITIVES = (3279, 1069, 1815, 925, 4658, 1093, 435, 86, 6112, 1748, 1623, 1143, 555, 2665)


def synthetic(n_images: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with the test-set prevalences and scores that separate them moderately (AUC about 0.8)."""
    rng = np.random.default_rng(seed)
    prevalence = np.array(TEST_POSITIVES) / 25_596
    y = (rng.random((n_images, len(FINDINGS))) < prevalence).astype(np.int8)
    logits = rng.normal(size=y.shape) + 1.2 * y
    return y, np.round(1 / (1 + np.exp(-logits)), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=25_596)
    parser.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    args = parser.parse_args()

    y, scores = synthetic(args.images)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        aucs = bootstrap_auc(y, scores, n_resamples=args.resamples, seed=0)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(
        f"bootstrap_auc: {args.resamples} resamples x {y.shape[1]} findings x {args.images} images: "
        f"best {best:.2f} s of {args.repeat} (all: {', '.join(f'{t:.2f}' for t in times)}); "
        f"{best / TARGET_S:.2f} x the {TARGET_S:.0f} s target; "
        f"{int(np.isnan(aucs).any(axis=1).sum())} resamples with an undefined AUC"
    )


if __name__ == "__main__":
    main()
