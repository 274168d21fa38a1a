"""`pipeline.explain.gradcam`: one-pass maps agree with GradientTape Grad-CAM; map and overlay shapes and ranges."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import IMAGES, TEST_DATA
from gradcam_reference import gradcam_tape

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import imaging
from pipeline.explain import gradcam


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return imaging.load_image(IMAGES / "00000001_000.png")


@pytest.fixture(scope="module")
def result(small_model, image):
    return gradcam.heatmaps(small_model, image)


def test_maps_at_the_image_resolution(result, image):
    probabilities, maps = result
    assert probabilities.shape == (len(FINDINGS),)
    assert np.all((probabilities > 0) & (probabilities < 1))
    assert maps.shape == (len(FINDINGS), *image.shape)
    assert maps.min() >= 0 and maps.max() <= 1
    for heatmap in maps:  # each map is normalised to peak 1, unless it is all zero
        assert heatmap.max() == pytest.approx(1.0) or not heatmap.any()


def test_non_square_image_keeps_its_shape(small_model):
    image = imaging.load_image(TEST_DATA / "00000001_000.png")[:, 100:900]
    _, maps = gradcam.heatmaps(small_model, image)
    assert maps.shape == (len(FINDINGS), 1024, 800)


def test_probabilities_are_the_model_output(small_model, result, image):
    from pipeline.inference.predict import predict_images

    np.testing.assert_allclose(result[0], predict_images(small_model, [image])[0], atol=1e-6)


def test_one_pass_maps_match_gradient_tape(small_model, result, image):
    _, maps = result
    nonzero = [k for k in range(len(FINDINGS)) if maps[k].any()]
    zero = [k for k in range(len(FINDINGS)) if not maps[k].any()]
    assert len(nonzero) >= 3
    for k in nonzero[:3]:
        reference = gradcam_tape(small_model, image, k)
        assert np.corrcoef(maps[k].ravel(), reference.ravel())[0, 1] >= 0.999
    for k in zero[:1]:  # the ReLU removed everything in one pass: so it does with the tape
        assert not gradcam_tape(small_model, image, k).any()


def test_overlay(image):
    heatmap = np.linspace(0, 1, image.size, dtype=np.float32).reshape(image.shape)
    out = gradcam.overlay(image, heatmap)
    assert out.shape == (*image.shape, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(gradcam.overlay(image, heatmap, opacity=0.0), np.dstack([image] * 3))
    full = gradcam.overlay(image, heatmap, opacity=1.0)
    assert tuple(full[0, 0]) == (0, 0, 128) and tuple(full[-1, -1]) == (128, 0, 0)  # JET: dark blue .. dark red
    small = gradcam.overlay(image, heatmap[::8, ::8])  # a coarser heatmap is resized to the image
    assert small.shape == out.shape


@pytest.mark.parametrize("opacity", [-0.1, 1.5])
def test_overlay_rejects_opacity_outside_unit_range(image, opacity):
    with pytest.raises(InputError, match="opacity"):
        gradcam.overlay(image, np.zeros(image.shape), opacity=opacity)
