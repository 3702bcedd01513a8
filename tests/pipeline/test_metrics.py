"""Metrics checked against confusion matrices computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import evaluate_methods, evaluate_per_class
from pipeline.metrics import confusion_matrix, per_class_f1, per_class_recall, summarize

# 3 classes. True 0: 3 images (2 right, 1 as 1). True 1: 2 images (both right).
# True 2: 5 images (1 right, 2 as 0, 2 as 1).
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 0, 0, 1, 1])
CM = np.array([[2, 1, 0], [0, 2, 0], [2, 2, 1]])


def test_confusion_matrix_by_hand():
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 3), CM)


def test_recall_f1_and_summary_by_hand():
    recall = per_class_recall(CM)
    np.testing.assert_allclose(recall, [2 / 3, 1.0, 1 / 5])
    precision = np.array([2 / 4, 2 / 5, 1 / 1])
    f1 = 2 * precision * recall / (precision + recall)
    np.testing.assert_allclose(per_class_f1(CM), f1)
    s = summarize(CM)
    assert s["accuracy"] == pytest.approx(5 / 10)
    assert s["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 5) / 3)
    assert s["macro_f1"] == pytest.approx(f1.mean())


def test_class_never_predicted_has_zero_f1():
    cm = np.array([[3, 0], [2, 0]])
    np.testing.assert_allclose(per_class_f1(cm), [2 * 0.6 * 1 / 1.6, 0.0])
    assert summarize(cm)["balanced_accuracy"] == pytest.approx(0.5)


def test_class_without_test_images_is_left_out_of_means():
    cm = np.array([[4, 0, 0], [1, 3, 0], [0, 0, 0]])
    s = summarize(cm)
    assert s["balanced_accuracy"] == pytest.approx((1 + 0.75) / 2)
    assert np.isnan(per_class_recall(cm)[2])


def test_evaluate_per_class_names_classes():
    r = evaluate_per_class(Y_TRUE, Y_PRED, ["a", "b", "c"])
    assert r["per_class"]["c"]["accuracy"] == pytest.approx(0.2)
    assert r["confusion_matrix"] == CM.tolist()


def test_evaluate_methods_averages_seeds():
    perfect, half = Y_TRUE.copy(), Y_PRED
    preds = np.stack([perfect, half, half, half])
    out = evaluate_methods(preds, Y_TRUE, ["gan", "gan", "baseline", "baseline"], ["a", "b", "c"])
    assert out["gan"]["seeds"] == 2
    assert out["gan"]["accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert out["baseline"]["accuracy"] == pytest.approx(0.5)
    assert out["gan"]["per_class"]["c"]["accuracy"] == pytest.approx((1.0 + 0.2) / 2)
