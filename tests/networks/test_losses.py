"""`pipeline.networks.losses`: the weighted BCE matches a NumPy reference and survives a save/reload."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.core.errors import InputError
from pipeline.networks.losses import WeightedBinaryCrossentropy, class_weights


def reference_loss(y, p, w_pos, w_neg, eps=1e-7):
    """The course's formula: sum over classes of the batch mean of the weighted log losses."""
    total = 0.0
    for i in range(y.shape[1]):
        pos = w_pos[i] * y[:, i] * np.log(p[:, i] + eps)
        neg = w_neg[i] * (1 - y[:, i]) * np.log(1 - p[:, i] + eps)
        total += np.mean(-(pos + neg))
    return total


def test_matches_numpy_reference():
    rng = np.random.default_rng(0)
    y = (rng.random((32, 14)) < 0.2).astype(np.float32)
    p = rng.random((32, 14)).astype(np.float32)
    p[0, :3] = [0.0, 1.0, 0.5]  # the epsilon keeps the log finite at 0 and 1
    w_pos, w_neg = class_weights(y)
    loss = WeightedBinaryCrossentropy(w_pos, w_neg)
    got = float(keras.ops.convert_to_numpy(loss(y, p)))
    expected = reference_loss(y.astype(np.float64), p.astype(np.float64), w_pos, w_neg)
    assert got == pytest.approx(expected, rel=1e-5)


def test_class_weights_are_swapped_frequencies():
    labels = np.array([[1, 0], [0, 0], [1, 1], [0, 0]])
    w_pos, w_neg = class_weights(labels)
    np.testing.assert_allclose(w_pos, [0.5, 0.75])
    np.testing.assert_allclose(w_neg, [0.5, 0.25])
    # Balanced by construction: summed over the set, positive and negative weights are equal per finding.
    np.testing.assert_allclose(w_pos * labels.sum(0), w_neg * (1 - labels).sum(0))


def test_rejects_mismatched_weights():
    with pytest.raises(InputError, match="same length"):
        WeightedBinaryCrossentropy([0.5, 0.5], [0.5])


def test_compiled_model_saves_and_reloads_in_safe_mode(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((8, 5)).astype(np.float32)
    y = (rng.random((8, 14)) < 0.3).astype(np.float32)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(14, activation="sigmoid")(inputs))
    loss = WeightedBinaryCrossentropy(*class_weights(y), epsilon=1e-6)
    model.compile(optimizer="adam", loss=loss)
    model.fit(x, y, epochs=1, verbose=0)  # builds the optimizer state, as in a real checkpoint
    path = tmp_path / "model.keras"
    model.save(path)

    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(reloaded.loss, WeightedBinaryCrossentropy)
    assert reloaded.loss.get_config() == loss.get_config()
    assert reloaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)
