"""Per-method evaluation on the held-out test set: metrics per seed, then over seeds.

Report shape (report["methods"][method]): every figure keeps its plain key (the mean over
seeds) and, once `add_intervals` has run, its 95 % bootstrap interval sits next to it under
the same name with `_ci95` appended, as [lo, hi]:

    {"accuracy": 0.93, "accuracy_ci95": [0.91, 0.95],
     "balanced_accuracy": ..., "balanced_accuracy_ci95": [...],
     "macro_f1": ..., "macro_f1_ci95": [...],
     "per_class": {"1": {"accuracy": 0.9, "accuracy_ci95": [...], "precision": ...,
                         "precision_ci95": [...], "f1": ..., "f1_ci95": [...]}},
     "confusion_matrix": [[...]], "seeds": 3, "per_seed": [...]}

report["comparisons"][class] (minority classes only, see `compare_minority`):

    {"test_count": 200, "metric": "accuracy",
     "gan_vs_baseline": {"difference": 0.06, "difference_ci95": [0.03, 0.09],
                         "verdict": "helped", "note": null},
     "gan_vs_oversample": {...}}
"""

from __future__ import annotations

import numpy as np

from pipeline.metrics import (
    confusion_matrix,
    per_class_f1,
    per_class_precision,
    per_class_recall,
    summarize,
)
from pipeline.statistics import (
    DRAWS,
    LEVEL,
    MIN_TEST_IMAGES,
    MethodDraws,
    bootstrap_methods,
    percentile_interval,
    small_sample_verdict,
    verdict,
    wilson_interval,
)

METHODS = ("baseline", "oversample", "gan")


def evaluate_per_class(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """One classifier's figures: overall, balanced accuracy, macro-F1, per class, confusion.

    Per class, "accuracy" is the recall (share of the class's test images classified right)
    and "precision" the share of images predicted as the class that are of it (0 if none
    were): a method can buy minority recall with precision.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    recall, precision, f1 = per_class_recall(cm), per_class_precision(cm), per_class_f1(cm)
    return {
        **summarize(cm),
        "per_class": {
            name: {
                "accuracy": _float(recall[i]),
                "precision": float(precision[i]),
                "f1": float(f1[i]),
            }
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


def add_intervals(
    methods: dict[str, dict],
    draws: dict[str, MethodDraws],
    class_names: list[str],
    test_counts: list[int],
) -> None:
    """Put each figure's 95 % interval next to it, as `<figure>_ci95: [lo, hi]` (in place).

    Per-class accuracy intervals cover at least the Wilson interval of the class's test images
    (the bootstrap alone gives [1, 1] when every image is right; see pipeline.statistics).
    """
    for method, d in draws.items():
        figures = methods[method]
        for key in ("accuracy", "balanced_accuracy", "macro_f1"):
            figures[f"{key}_ci95"] = _interval(getattr(d, key))
        acc, f1 = percentile_interval(d.per_class_accuracy), percentile_interval(d.per_class_f1)
        precision = percentile_interval(d.per_class_precision)
        point = np.array([_nan(figures["per_class"][c]["accuracy"]) for c in class_names])
        wilson = wilson_interval(point, np.array(test_counts))
        acc = np.stack([np.fmin(acc[0], wilson[0]), np.fmax(acc[1], wilson[1])])
        for i, name in enumerate(class_names):
            figures["per_class"][name]["accuracy_ci95"] = _pair(acc[:, i])
            figures["per_class"][name]["precision_ci95"] = _pair(precision[:, i])
            figures["per_class"][name]["f1_ci95"] = _pair(f1[:, i])


def compare_minority(
    methods: dict[str, dict],
    draws: dict[str, MethodDraws],
    class_names: list[str],
    minority: list[int],
    test_counts: list[int],
    correct: dict[str, np.ndarray] | None = None,
    y_true: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per minority class: gan - baseline and gan - oversample in per-class accuracy.

    The difference is of the means over seeds; its interval comes from the paired bootstrap
    (same resampled images and seeds for both methods); the verdict from the interval, or,
    for a class with fewer than MIN_TEST_IMAGES test images, from an exact sign test over its
    images (correct[method]: share of seeds right, per test image).
    """
    out = {}
    for c in minority:
        name = class_names[c]
        entry: dict = {"test_count": test_counts[c], "metric": "accuracy"}
        for other in ("baseline", "oversample"):
            if "gan" not in draws or other not in draws:
                continue
            diff = draws["gan"].per_class_accuracy[:, c] - draws[other].per_class_accuracy[:, c]
            lo, hi = percentile_interval(diff)
            point = _minus(
                methods["gan"]["per_class"][name]["accuracy"],
                methods[other]["per_class"][name]["accuracy"],
            )
            word, note = verdict(float(lo), float(hi), test_counts[c])
            if test_counts[c] < MIN_TEST_IMAGES and correct is not None and test_counts[c]:
                mine = y_true == c
                word, note = small_sample_verdict(correct["gan"][mine] - correct[other][mine])
            entry[f"gan_vs_{other}"] = {
                "difference": point,
                "difference_ci95": _pair(np.array([lo, hi])),
                "verdict": word,
                "note": note,
            }
        out[name] = entry
    return out


def evaluate_with_intervals(
    preds: np.ndarray,
    y_true: np.ndarray,
    method_of: list[str],
    seed_of: list[int],
    class_names: list[str],
    minority: list[int],
    seed: int = 0,
    draws: int = DRAWS,
    strata: np.ndarray | None = None,
) -> tuple[dict[str, dict], dict[str, dict], dict]:
    """(methods, comparisons, statistics) for the report; see the module docstring.

    strata: a group per test image within which the bootstrap resamples (cross-validation:
    fold x class); None = by class."""
    methods = evaluate_methods(preds, y_true, method_of, class_names)
    boot = bootstrap_methods(
        preds, y_true, method_of, seed_of, len(class_names), draws, seed, strata
    )
    test_counts = np.bincount(y_true, minlength=len(class_names)).tolist()
    add_intervals(methods, boot, class_names, test_counts)
    correct = {
        m: np.mean([preds[i] == y_true for i, x in enumerate(method_of) if x == m], axis=0)
        for m in dict.fromkeys(method_of)
    }
    comparisons = compare_minority(
        methods, boot, class_names, minority, test_counts, correct, y_true
    )
    small = [c for c, n in zip(class_names, test_counts, strict=True) if n < MIN_TEST_IMAGES]
    info = statistics_info(len(set(seed_of)), draws, seed, small)
    if strata is not None:
        info["notes"][0] = (
            "percentile bootstrap: test images resampled within each (fold, class) of the "
            "cross-validation, classifier seeds resampled; differences are paired (same images "
            "and seeds for both methods)"
        )
    return methods, comparisons, info


def statistics_info(
    seeds: int, draws: int, seed: int, small_classes: list[str] | None = None
) -> dict:
    """How the intervals were made, for the report; small_classes have few test images."""
    notes = [
        "percentile bootstrap: test images resampled within each class, classifier seeds "
        "resampled; differences are paired (same images and seeds for both methods)",
        "per-class accuracy intervals are widened to at least the Wilson score interval of the "
        "class's test images, so a class with every image right still gets an interval below 1",
        f"a verdict from the interval needs at least {MIN_TEST_IMAGES} test images of the "
        "class; below that it comes from an exact sign test over the class's images",
        "no correction for multiple comparisons: each interval is a 95 % interval on its own",
    ]
    if seeds == 1:
        notes.append(
            "one classifier seed: the intervals cover test-set sampling only, not the "
            "randomness of training (use more seeds for that)"
        )
    if small_classes:
        shown = ", ".join(small_classes[:10]) + (", ..." if len(small_classes) > 10 else "")
        notes.append(
            f"fewer than {MIN_TEST_IMAGES} test images in class(es) {shown}: their intervals, "
            "and those of the overall figures, are rough and can be too narrow (a resample of "
            "a class whose images are all right, or all wrong, never varies)"
        )
    return {
        "method": "bootstrap",
        "level": LEVEL,
        "draws": draws,
        "bootstrap_seed": seed,
        "seeds": seeds,
        "min_test_images_for_verdict": MIN_TEST_IMAGES,
        "notes": notes,
    }


def _interval(values: np.ndarray) -> list[float | None]:
    return _pair(percentile_interval(values))


def _pair(bounds: np.ndarray) -> list[float | None]:
    """[lo, hi] to 4 decimals, rounded outwards: an interval that ends at its point estimate
    (e.g. 1/3 when every seed and draw agrees) must still contain the unrounded point."""
    lo, hi = (round(float(b) * 1e4, 6) for b in bounds)  # 6: drop float noise like 9499.9999
    return [_float(np.floor(lo) / 1e4), _float(np.ceil(hi) / 1e4)]


def _nan(x: float | None) -> float:
    return np.nan if x is None else x


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _mean_over_seeds(runs: list[dict], class_names: list[str]) -> dict:
    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    return {
        "accuracy": mean([r["accuracy"] for r in runs]),
        "balanced_accuracy": mean([r["balanced_accuracy"] for r in runs]),
        "macro_f1": mean([r["macro_f1"] for r in runs]),
        "per_class": {
            c: {
                k: mean([r["per_class"][c][k] for r in runs])
                for k in ("accuracy", "precision", "f1")
            }
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
