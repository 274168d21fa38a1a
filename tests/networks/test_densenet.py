"""`pipeline.networks.densenet`: shapes, in-model preprocessing and finding names, weights options, load errors."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
from conftest import IMAGES, SMALL_SIZE

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import imaging
from pipeline.networks import densenet

IMAGE = IMAGES / "00000001_000.png"


def _batch(image: np.ndarray, size: int) -> np.ndarray:
    return imaging.resize(image, size)[np.newaxis, :, :, np.newaxis].astype(np.float32)


def test_build_shapes_and_layers(small_model):
    assert small_model.input_shape == (None, SMALL_SIZE, SMALL_SIZE, 1)
    assert small_model.output_shape == (None, len(FINDINGS))
    assert densenet.input_size(small_model) == SMALL_SIZE
    assert densenet.finding_names(small_model) == list(FINDINGS)
    assert small_model.get_layer("relu").output.shape == (None, SMALL_SIZE // 32, SMALL_SIZE // 32, 1024)
    assert small_model.get_layer("predictions").activation is keras.activations.sigmoid


def test_preprocessing_is_the_densenet_one(small_model):
    """The in-model layers turn raw gray 0..255 into what densenet.preprocess_input makes of the RGB copy."""
    image = imaging.load_image(IMAGE)
    x = _batch(image, SMALL_SIZE)
    preprocess = keras.Model(small_model.input, small_model.get_layer("imagenet_normalization").output)
    expected = keras.applications.densenet.preprocess_input(np.repeat(x, 3, axis=-1))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(preprocess(x)), expected, atol=1e-5)


def test_checkpoint_round_trip(small_model, small_checkpoint):
    """A checkpoint carries its preprocessing and finding names: same predictions on a real image."""
    reloaded = densenet.load(small_checkpoint)
    x = _batch(imaging.load_image(IMAGE), SMALL_SIZE)
    before = keras.ops.convert_to_numpy(small_model(x, training=False))
    after = keras.ops.convert_to_numpy(reloaded(x, training=False))
    np.testing.assert_allclose(after, before, atol=1e-6)
    assert densenet.finding_names(reloaded) == list(FINDINGS)
    assert densenet.input_size(reloaded) == SMALL_SIZE
    assert [p.name for p in small_checkpoint.parent.iterdir()] == [small_checkpoint.name]  # no temp file left


def test_save_refuses_other_suffix(small_model, tmp_path):
    with pytest.raises(InputError, match=r"\.keras"):
        densenet.save(small_model, tmp_path / "model.h5")


def test_imagenet_offline_fails_fast_with_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setattr(densenet, "IMAGENET_URL", "http://127.0.0.1:9/densenet121_notop.h5")  # nothing listens
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        densenet.build(SMALL_SIZE, weights="imagenet")
    message = str(info.value)
    assert time.monotonic() - start < 5
    assert "\n" not in message
    assert "`weights` none" in message and "`weights` PATH" in message  # the CLI prints --weights
    assert not list(tmp_path.rglob("*.h5"))


def test_weights_from_a_local_file(tmp_path):
    backbone = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(SMALL_SIZE, SMALL_SIZE, 3))
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    built = densenet.build(SMALL_SIZE, weights=str(path))
    weighted = [layer for layer in backbone.layers if layer.weights]  # weightless layer names carry counters
    assert len(weighted) == 241
    for layer in weighted:
        for expected, got in zip(layer.weights, built.get_layer(layer.name).weights, strict=True):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())


@pytest.mark.parametrize("name", ["missing.weights.h5", "text.weights.h5"])
def test_weights_bad_file(tmp_path, name):
    (tmp_path / "text.weights.h5").write_text("not weights")
    with pytest.raises(InputError, match="`weights`") as info:
        densenet.build(SMALL_SIZE, weights=str(tmp_path / name))
    assert "\n" not in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        densenet.load(tmp_path / "missing.keras")


def test_load_text_file(tmp_path):
    path = tmp_path / "x.keras"
    path.write_text("this is not a model\n")
    with pytest.raises(InputError, match="cannot load") as info:
        densenet.load(path)
    assert "\n" not in str(info.value)


def test_inference_function_is_traced_once_across_threads(small_model):
    """The app shares one cached model between session threads: they must all get the one traced function."""
    from concurrent.futures import ThreadPoolExecutor

    shared = keras.Model(small_model.inputs, small_model.outputs)  # a model no test has traced yet
    with ThreadPoolExecutor(max_workers=8) as pool:
        functions = list(pool.map(lambda _: densenet.inference_function(shared), range(16)))
    assert all(f is functions[0] for f in functions)
    x = np.zeros((2, SMALL_SIZE, SMALL_SIZE, 1), np.float32)
    features, probabilities = functions[0](x)
    assert probabilities.shape == (2, len(FINDINGS)) and features.shape[0] == 2


def test_tiny_network_keeps_the_interface_of_the_densenet():
    """`--network tiny` (smoke tests) has the same preprocessing, Grad-CAM layer, head and finding names."""
    tiny = densenet.build(SMALL_SIZE, "none", "tiny")
    assert densenet.finding_names(tiny) == list(FINDINGS) and densenet.input_size(tiny) == SMALL_SIZE
    assert tiny.get_layer(densenet.CAM_LAYER).output.shape[-1] == 16
    assert tiny.get_layer(densenet.HEAD_LAYER).dtype_policy.name == "float32"
    with pytest.raises(InputError, match="tiny starts from random weights"):
        densenet.build(SMALL_SIZE, "imagenet", "tiny")
    with pytest.raises(InputError, match="`network` 'resnet': unknown"):
        densenet.build(SMALL_SIZE, "none", "resnet")
