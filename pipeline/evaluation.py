"""Per-method evaluation on the held-out test set: metrics per seed, then over seeds."""

from __future__ import annotations

import numpy as np

from pipeline.metrics import confusion_matrix, per_class_f1, per_class_recall, summarize

METHODS = ("baseline", "oversample", "gan")


def evaluate_per_class(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """One classifier's figures: overall, balanced accuracy, macro-F1, per class, confusion."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    recall, f1 = per_class_recall(cm), per_class_f1(cm)
    return {
        **summarize(cm),
        "per_class": {
            name: {"accuracy": _float(recall[i]), "f1": float(f1[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def evaluate_methods(
    preds: np.ndarray, y_true: np.ndarray, method_of: list[str], class_names: list[str]
) -> dict[str, dict]:
    """preds: [M, T] predictions of M members; method_of[m] names member m's method.

    Per method: each figure is the mean over its seeds; `per_seed` keeps every seed's figures
    and `confusion_matrix` is the mean over seeds.
    """
    out = {}
    for method in dict.fromkeys(method_of):
        runs = [
            evaluate_per_class(y_true, preds[m], class_names)
            for m, x in enumerate(method_of)
            if x == method
        ]
        out[method] = _mean_over_seeds(runs, class_names)
    return out


def _mean_over_seeds(runs: list[dict], class_names: list[str]) -> dict:
    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    return {
        "accuracy": mean([r["accuracy"] for r in runs]),
        "balanced_accuracy": mean([r["balanced_accuracy"] for r in runs]),
        "macro_f1": mean([r["macro_f1"] for r in runs]),
        "per_class": {
            c: {k: mean([r["per_class"][c][k] for r in runs]) for k in ("accuracy", "f1")}
            for c in class_names
        },
        "confusion_matrix": np.mean([r["confusion_matrix"] for r in runs], axis=0)
        .round(2)
        .tolist(),
        "seeds": len(runs),
        "per_seed": [
            {k: r[k] for k in ("accuracy", "balanced_accuracy", "macro_f1")} for r in runs
        ],
    }


def _float(x: float) -> float | None:
    return None if np.isnan(x) else float(x)
