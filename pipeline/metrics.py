"""Classification metrics from a confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]; cm[i, j] = images of class i predicted as j."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Per-class accuracy: correct / images of that class (nan for a class with no images)."""
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def per_class_precision(cm: np.ndarray) -> np.ndarray:
    predicted = cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(predicted > 0, np.diag(cm) / predicted, 0.0)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class; 0 where precision + recall is 0 (the usual zero_division=0 convention)."""
    p, r = per_class_precision(cm), np.nan_to_num(per_class_recall(cm))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def summarize(cm: np.ndarray) -> dict[str, float]:
    """Overall accuracy, balanced accuracy (mean recall) and macro-F1, over classes with images."""
    present = cm.sum(1) > 0
    return {
        "accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "balanced_accuracy": float(np.nanmean(per_class_recall(cm)[present])),
        "macro_f1": float(per_class_f1(cm)[present].mean()),
    }
