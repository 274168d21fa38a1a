"""The out-of-distribution guard on the shipped demo run: real X-rays pass, other pictures are flagged."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import IMAGES, NIH, REPO, TEST_DATA

from pipeline.data import imaging
from pipeline.data.label_files import load_labels
from pipeline.inference import ood, serving

RUN = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
# NIH stores these two with inverted grey levels (bone dark, text black on white); the polarity check says so.
STORED_INVERTED = {"00017625_000.png", "00017999_000.png"}


@pytest.fixture(scope="module")
def guard():
    predictor = serving.load_predictor(RUN / "best.keras")
    assert predictor.source == "onnx"  # the committed export is current
    stats = ood.load(RUN)
    assert stats is not None

    def verdicts(decoded: list[np.ndarray]) -> list[ood.Verdict]:
        return [answer.verdict for answer in serving.analyse(predictor, stats, decoded, heatmap_size=8)]

    return verdicts


def encoded(image: np.ndarray, ext: str = ".png") -> np.ndarray:
    """The image written to a file format and decoded again, as an upload would be."""
    ok, data = cv2.imencode(ext, image)
    assert ok
    return imaging.load_decoded(data.tobytes())


def colour_photo() -> np.ndarray:
    """A JPEG of a green rectangle on a gray gradient (the issue's example), in BGR for OpenCV."""
    image = np.repeat(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], 480, axis=0).repeat(3, axis=2)
    cv2.rectangle(image, (100, 100), (400, 300), (0, 200, 0), -1)
    return encoded(image, ".jpg")


def text_page() -> np.ndarray:
    page = np.full((1100, 850), 255, np.uint8)
    rng = np.random.default_rng(0)
    for line in range(38):
        words = "".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz     "), 55))
        cv2.putText(page, words, (40, 50 + 27 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 1, cv2.LINE_AA)
    return encoded(page)


def checkerboard(square: int) -> np.ndarray:
    y, x = np.mgrid[:512, :512]
    return encoded((((y // square) + (x // square)) % 2 * 255).astype(np.uint8))


def test_every_embedded_nih_image_and_original_passes(guard):
    paths = sorted(IMAGES.glob("*.png"))
    assert len(paths) == 549
    originals = sorted(TEST_DATA.glob("000*.png"))  # full-size 1024 x 1024 NIH originals (gray and RGBA)
    decoded = [imaging.load_decoded(path) for path in [*paths, *originals]]
    names = [path.name for path in paths] + [f"original {path.name}" for path in originals]
    verdicts = guard(decoded)
    failed = {name: v.reason for name, v in zip(names, verdicts, strict=True) if not v.in_distribution}
    assert set(failed) == STORED_INVERTED, failed
    assert all("inverted grey levels" in failed[name] for name in STORED_INVERTED)
    assert all(v.typicality is not None and v.typicality >= 1 for v in verdicts)


def test_validation_images_pass_at_the_stored_rate(guard):
    valid = load_labels(NIH / "valid-small.csv")["Image"]
    verdicts = guard([imaging.load_decoded(IMAGES / name) for name in valid])
    assert np.mean([v.typicality >= 1 for v in verdicts]) >= ood.PASS_RATE


def test_other_pictures_are_flagged(guard):
    rng = np.random.default_rng(1)
    held_out = load_labels(NIH / "test.csv")["Image"][:12]
    cases = {
        "colour photograph": [colour_photo()],
        "page of text": [text_page()],
        "noise": [encoded(rng.integers(0, 256, (512, 512), dtype=np.uint8))],
        "flat grey": [encoded(np.full((512, 512), 128, np.uint8))],
        "checkerboard": [checkerboard(16), checkerboard(64)],
        "inverted X-ray": [encoded(255 - imaging.load_image(IMAGES / name)) for name in held_out]
        + [encoded(255 - imaging.load_image(TEST_DATA / "00000001_000.png"))],
    }
    fine, unlike = "pixel-level detail", "unlike the training"
    expected = {"colour photograph": ["colour"], "flat grey": ["uniform"], "noise": [fine],
                "inverted X-ray": ["inverted"], "page of text": [fine, unlike], "checkerboard": [fine, unlike]}
    for case, images in cases.items():
        for verdict in guard(images):
            assert not verdict.in_distribution, case
            assert any(words in verdict.reason for words in expected[case]), (case, verdict.reason)
            assert "\n" not in verdict.reason


def test_pixel_checks_without_a_model():
    xray = imaging.load_decoded(TEST_DATA / "00000100_000.png")  # RGBA original: equal channels, still an X-ray
    assert xray.ndim == 3 and ood.pixel_reason(xray) is None
    assert "aspect ratio" in ood.pixel_reason(imaging.load_image(IMAGES / "00000001_000.png")[:100, :])
    assert ood.judge(xray, imaging.to_gray(xray), None, None) == ood.Verdict(True, None, None)


def test_fit_threshold_passes_every_held_out_image(tmp_path):
    rng = np.random.default_rng(0)
    train, valid = rng.normal(size=(20, 40)), rng.normal(size=(30, 40))
    grays = [imaging.load_image(path) for path in sorted(IMAGES.glob("*.png"))[:20]]
    stats = ood.fit(train, valid, np.stack([ood.polarity_pair(g) for g in grays]), components=5)
    assert np.all(stats.score(valid) >= 1)
    assert np.all(stats.score(valid + 10) < 1)  # shifted far from the training features
    ood.save(stats, tmp_path, {"note": "test"})
    loaded = ood.load(tmp_path)
    np.testing.assert_allclose(loaded.score(valid), stats.score(valid), rtol=1e-12)
    assert ood.load(tmp_path / "missing") is None


def grey_shapes(seed: int) -> np.ndarray:
    """Random filled grey circles, squares and ellipses on a grey ground, lightly blurred: no X-ray at all."""
    rng = np.random.default_rng(seed)
    image = np.full((512, 512), int(rng.integers(60, 200)), np.uint8)
    for _ in range(int(rng.integers(5, 25))):
        kind, level, size = int(rng.integers(3)), int(rng.integers(0, 256)), int(rng.integers(20, 150))
        x, y = (int(v) for v in rng.integers(0, 512, 2))
        if kind == 0:
            cv2.circle(image, (x, y), size, level, -1)
        elif kind == 1:
            cv2.rectangle(image, (x, y), (x + size, y + size), level, -1)
        else:
            cv2.ellipse(image, (x, y), (size, size // 2), float(rng.integers(180)), 0, 360, level, -1)
    return encoded(cv2.GaussianBlur(image, (0, 0), 2))


def test_grey_shapes_are_told_what_was_measured_not_to_fix_a_dicom_export(guard):
    """Pictures of grey shapes that trip the polarity check are not advised to export as MONOCHROME2."""
    verdicts = guard([grey_shapes(seed) for seed in range(40)])
    polarity = [v for v in verdicts if v.reason and "polarity" in v.reason]
    assert len(polarity) >= 10  # the polarity check does fire on such pictures
    advised = [v for v in polarity if "MONOCHROME2" in v.reason]
    assert len(advised) <= 1, [v.reason for v in advised]
    for verdict in polarity:
        if verdict not in advised:
            assert "polarity check scores +" in verdict.reason and "left-right symmetry" in verdict.reason
            assert "expect a frontal chest X-ray" in verdict.reason
