"""Class-weighted binary cross-entropy for the 14 imbalanced findings (the course's weighted loss).

Most findings are rare, so a plain BCE is minimised by predicting "absent" everywhere. Weighting the
positive term of finding ``i`` by its negative frequency and the negative term by its positive frequency
makes the positive and negative cases of every finding contribute equally over the training set.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.core.errors import InputError
from pipeline.data.label_files import class_weights

__all__ = ["LOSSES", "WeightedBinaryCrossentropy", "class_weights", "make_loss"]  # class_weights: from data.label_files

LOSSES = ("weighted", "plain")


def make_loss(kind: str, labels: Any) -> keras.losses.Loss:
    """The training loss: class-weighted BCE with weights from ``labels`` (``"weighted"``), or plain BCE.

    ``labels`` is what `class_weights` takes: the training label matrix or canonical table.
    """
    if kind == "weighted":
        return WeightedBinaryCrossentropy(*class_weights(labels))
    if kind == "plain":
        return keras.losses.BinaryCrossentropy()
    raise InputError(f"`loss` {kind!r}: unknown loss; use one of {', '.join(LOSSES)}")


@keras.saving.register_keras_serializable(package="pipeline")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Sum over findings of the batch mean of ``-(w_pos*y*log(p+eps) + w_neg*(1-y)*log(1-p+eps))``.

    Parameters
    ----------
    pos_weights, neg_weights
        One weight per finding, usually ``class_weights(train_labels)``.
    epsilon
        Keeps ``log`` finite when a probability is exactly 0 or 1.
    """

    def __init__(
        self,
        pos_weights: Any,
        neg_weights: Any,
        epsilon: float = 1e-7,
        name: str = "weighted_binary_crossentropy",
        **kwargs: Any,
    ) -> None:
        super().__init__(name=name, **kwargs)
        pos = np.asarray(pos_weights, dtype=np.float64)
        neg = np.asarray(neg_weights, dtype=np.float64)
        if pos.ndim != 1 or pos.shape != neg.shape or not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
            raise InputError(
                f"loss weights must be two finite 1-D arrays of the same length, got shapes {pos.shape} and {neg.shape}"
            )
        self.pos_weights = pos.tolist()
        self.neg_weights = neg.tolist()
        self.epsilon = float(epsilon)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        # Per-sample sum over findings; the default "sum_over_batch_size" reduction then takes the batch mean.
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        w_pos = ops.convert_to_tensor(self.pos_weights, dtype=y_pred.dtype)
        w_neg = ops.convert_to_tensor(self.neg_weights, dtype=y_pred.dtype)
        loss = -(
            w_pos * y_true * ops.log(y_pred + self.epsilon)
            + w_neg * (1.0 - y_true) * ops.log(1.0 - y_pred + self.epsilon)
        )
        return ops.sum(loss, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pos_weights": self.pos_weights,
            "neg_weights": self.neg_weights,
            "epsilon": self.epsilon,
        }
