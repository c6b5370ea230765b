"""Round 3 of the adversarial suite (issue 20): honest scores, no lost runs, no silent rewrites, secured servers usable
from the command line, bounded work before the server's gate, machine-readable --json, ranges that fit the types."""

from __future__ import annotations

import numpy as np
import pytest

from edgetpu_models.metrics import keras_topk_metric, topk_accuracy, topk_credit


def test_a_tie_never_earns_a_hit_in_class_index_order():
    """An all-zero 1000-class output (a quantised softmax often ties) earns chance, whatever the label."""
    scores = np.zeros((2, 1000), np.float32)
    truth = np.array([0, 1])
    assert topk_accuracy(scores, truth, 1) == pytest.approx(1 / 1000)
    assert topk_accuracy(scores, truth, 5) == pytest.approx(5 / 1000)
    one_tie = np.array([[0.5, 0.5, 0.1]], np.float32)  # the true class shares first place with one other
    assert topk_credit(one_tie, np.array([1]), 1)[0] == pytest.approx(0.5)
    assert topk_credit(one_tie, np.array([1]), 2)[0] == pytest.approx(1.0)
    nan = np.array([[np.nan, 1.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    assert topk_credit(nan, np.array([0]), 5)[0] == 0.0


def test_top5_with_five_classes_or_fewer_is_not_applicable():
    assert topk_accuracy(np.random.rand(4, 3), np.array([0, 1, 2, 0]), 5) is None


def test_the_keras_metric_uses_the_same_rule():
    scores = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0.5, 0.5, 0.2, 0.1]], np.float32)
    truth = np.array([0, 1, 1])
    metric = keras_topk_metric(2, "top2")
    metric.update_state(np.eye(4, dtype=np.float32)[truth], scores)
    assert float(metric.result()) == pytest.approx(float(np.mean(topk_credit(scores, truth, 2))))
