"""How well the out-of-distribution guard of the demo run separates chest X-rays from other pictures.

Not a speed benchmark: it prints, for real NIH images and for generated non-X-rays, how many the guard
passes, which check flags them (the first that does), how many the typicality score alone would flag,
and how far that score separates each kind from the held-out NIH test images (AUC, 1 = perfect). The
generated kinds are those of tests/inference/test_ood.py, more of each; the grayscale photographs are a hard case
that no cheap check is meant to catch. Numbers go to the README.
Run from the repository root: .venv/bin/python -m benchmarks.guard_separation
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.data import imaging
from pipeline.inference import ood, serving

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
IMAGES = REPO / "nih" / "images"
ORIGINALS = REPO / "tests" / "fixtures"


def encoded(image: np.ndarray, ext: str = ".png") -> np.ndarray:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return imaging.load_decoded(data.tobytes())


def photo(rng: np.random.Generator, gray: bool = False) -> np.ndarray:
    """A synthetic photograph: a colour gradient with a few filled shapes, as JPEG."""
    height, width = int(rng.integers(400, 800)), int(rng.integers(500, 900))
    image = np.zeros((height, width, 3), np.uint8)
    start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    image[:] = np.linspace(start, end, width)[None, :, :].astype(np.uint8)
    for _ in range(4):
        x, y = int(rng.integers(0, width - 50)), int(rng.integers(0, height - 50))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(image, (x, y), (x + int(rng.integers(40, 300)), y + int(rng.integers(40, 300))), colour, -1)
        cv2.circle(image, (int(rng.integers(0, width)), int(rng.integers(0, height))), int(rng.integers(20, 120)),
                   colour, -1)
    return encoded(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if gray else image, ".jpg")


def text_page(rng: np.random.Generator) -> np.ndarray:
    page = np.full((1100, 850), 255, np.uint8)
    scale = float(rng.uniform(0.5, 0.9))
    for line in range(int(900 / (40 * scale))):
        words = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz     "), 50))
        cv2.putText(page, words, (40, 60 + int(40 * scale) * line), cv2.FONT_HERSHEY_SIMPLEX, scale, 0, 1, cv2.LINE_AA)
    return encoded(page)


def checkerboard(square: int) -> np.ndarray:
    y, x = np.mgrid[:512, :512]
    return encoded((((y // square) + (x // square)) % 2 * 255).astype(np.uint8))


def auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(typicality of a random X-ray > that of a random other picture), ties counted half."""
    diff = inside[:, None] - outside[None, :]
    return float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0))


def main() -> None:
    predictor = serving.load_predictor(RUN / "best.keras")
    stats = ood.load(RUN)
    assert stats is not None, f"{RUN} has no typicality statistics: run `python -m pipeline export`"
    rng = np.random.default_rng(7)
    test_names = pd.read_csv(REPO / "nih" / "test.csv")["Image"]
    kinds = {
        "NIH embedded images (549)": [imaging.load_decoded(p) for p in sorted(IMAGES.glob("*.png"))],
        "NIH full-size originals": [imaging.load_decoded(p) for p in sorted(ORIGINALS.glob("000*.png"))],
        "NIH test images (55, held out)": [imaging.load_decoded(IMAGES / n) for n in test_names],
        "colour photographs": [photo(rng) for _ in range(20)],
        "grayscale photographs": [photo(rng, gray=True) for _ in range(20)],
        "pages of text": [text_page(rng) for _ in range(10)],
        "uniform noise": [encoded(rng.integers(0, 256, (512, 512), dtype=np.uint8)) for _ in range(10)],
        "gaussian noise": [encoded(np.clip(rng.normal(128, 40, (512, 512)), 0, 255).astype(np.uint8))
                           for _ in range(10)],
        "flat grey": [encoded(np.full((400, 400), v, np.uint8)) for v in (0, 60, 128, 200, 255)],
        "checkerboards": [checkerboard(s) for s in (4, 8, 16, 32, 64, 128)],
        "inverted X-rays (test set)": [encoded(255 - imaging.to_gray(d)) for d in
                                       [imaging.load_decoded(IMAGES / n) for n in test_names]],
    }
    held_out = serving.analyse(predictor, stats, kinds["NIH test images (55, held out)"], heatmap_size=8)
    reference = np.array([a.verdict.typicality for a in held_out])
    print(f"guard of {RUN.name}: typicality threshold {stats.threshold:.1f} (Mahalanobis distance), "
          f"{len(stats.variances)} components")
    print(f"{'kind':34} {'n':>4} {'passed':>7}  {'flagged by':42} {'typicality < 1':>14} {'AUC':>6}")
    for kind, decoded in kinds.items():
        answers = serving.analyse(predictor, stats, decoded, heatmap_size=8)
        scores = np.array([a.verdict.typicality for a in answers])
        reasons = Counter(_check(a.verdict.reason) for a in answers if not a.verdict.in_distribution)
        passed = sum(a.verdict.in_distribution for a in answers)
        separation = "" if kind.startswith("NIH") else f"{auc(reference, scores):.3f}"
        flagged = ", ".join(f"{name} {count}" for name, count in reasons.most_common()) or "-"
        below = int(np.sum(scores < 1))
        print(f"{kind:34} {len(answers):4d} {passed:7d}  {flagged:42} {below:14d} {separation:>6}")


def _check(reason: str | None) -> str:
    text = reason or ""
    for key, name in (("colour", "colour"), ("uniform", "flat"), ("pixel-level", "fine detail"),
                      ("aspect", "aspect"), ("inverted", "polarity"), ("unlike the training", "typicality")):
        if key in text:
            return name
    return "other"


if __name__ == "__main__":
    main()
