"""Top-k accuracy that a tie cannot flatter: the one rule used by `evaluate`, `train`'s metrics and the demo.

The rule (tie-aware top-k, the expected top-k accuracy under uniformly random tie-breaking): for one sample with
true-class score s, let `g` be the number of classes scoring strictly more than s and `e` the number scoring exactly s
(the true class included). The sample earns

    credit = clip((k - g) / e, 0, 1)

so a true class alone in the top k earns 1, one outside it earns 0, and one tied with other classes across the k-th
place earns the share of the tied places that fall inside the top k. Class-index order plays no part: an all-zero
1000-class output earns 1/1000 top-1 and 5/1000 top-5 whatever the label (`argsort`/`in_top_k` would give the low
classes 100% and every class 100% respectively). The rule is unbiased (its mean equals the accuracy under a random
tie-break) and deterministic, and equals plain top-k accuracy when there are no ties. A NaN true-class score earns 0.

With k at or above the number of classes every sample earns 1: such a top-k measures nothing and is reported as not
applicable (`topk_applicable`), not as 100%.

`topk_credit` is written against the array API both NumPy and `tf.experimental.numpy` speak, so the evaluator and
the Keras metric compute it with the same code.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


def topk_applicable(k: int, num_classes: int) -> bool:
    """Whether top-`k` says anything about a `num_classes`-way classifier (it cannot when k >= num_classes)."""
    return 0 < k < num_classes


def topk_credit(scores: Any, truth: Any, k: int, xp: Any = np) -> Any:
    """Per-sample tie-aware top-`k` credit in [0, 1] (see the module docstring) for `scores` [N, C] and integer
    class indices `truth` [N]; `xp` is `numpy` or `tf.experimental.numpy`."""
    count = xp.float64 if xp is np else xp.float32  # NumPy: exact shares (k/n) as a Python division gives them
    true_score = xp.take_along_axis(scores, xp.reshape(truth, (-1, 1)), axis=1)
    greater = xp.sum(xp.asarray(scores > true_score, dtype=count), axis=1)
    equal = xp.sum(xp.asarray(scores == true_score, dtype=count), axis=1)
    share = xp.clip((float(k) - greater) / xp.maximum(equal, 1.0), 0.0, 1.0)
    return xp.where(equal > 0, share, xp.zeros_like(share))


def top1_agreement(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per sample, the chance that two models' top-1 classes agree when each breaks its ties uniformly at random (the
    same rule as `topk_credit`): 1 for one clear shared winner, 1/1000 for two all-zero 1000-class outputs (argmax
    would call those a perfect agreement on class 0)."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    top_a = a == a.max(axis=1, keepdims=True)
    top_b = b == b.max(axis=1, keepdims=True)
    share = (top_a & top_b).sum(axis=1)
    return share / np.maximum(top_a.sum(axis=1) * top_b.sum(axis=1), 1)


def topk_accuracy(scores: np.ndarray, truth: np.ndarray, k: int) -> float | None:
    """Mean tie-aware top-`k` credit, or None when top-`k` is not applicable to this many classes."""
    scores = np.asarray(scores)
    if not topk_applicable(k, scores.shape[1]):
        return None
    return float(np.mean(topk_credit(scores, np.asarray(truth, np.int64), k))) if len(scores) else float("nan")


@lru_cache(maxsize=None)
def _keras_metric_class() -> Any:
    """The Keras metric class, made once (TensorFlow is imported lazily) and registered, so a saved model's compile
    config names `edgetpu_models>TieAwareTopK` (a class of this package, which the model loader accepts)."""
    import tensorflow as tf
    import tensorflow.experimental.numpy as tnp
    import tf_keras as keras

    def credit(y_true: Any, y_pred: Any, k: int) -> Any:
        truth = tf.argmax(y_true, axis=-1, output_type=tf.int32)
        return topk_credit(tnp.asarray(tf.cast(y_pred, tf.float32)), tnp.asarray(truth), k, xp=tnp)

    @keras.saving.register_keras_serializable("edgetpu_models")
    class TieAwareTopK(keras.metrics.MeanMetricWrapper):
        """Mean tie-aware top-k credit for one-hot labels (`edgetpu_models.metrics`)."""

        def __init__(self, k: int = 5, name: str = "top5", dtype: Any = None) -> None:
            super().__init__(credit, name=name, dtype=dtype, k=k)
            self.k = k

        def get_config(self) -> dict[str, Any]:
            return {"k": self.k, "name": self.name, "dtype": self.dtype}

    return TieAwareTopK


def keras_topk_metric(k: int, name: str) -> Any:
    """A Keras metric (mean over samples) of tie-aware top-`k` credit for one-hot labels, same rule as above."""
    return _keras_metric_class()(k=k, name=name)
