"""Cross-validated evaluation for zips without a test/ folder: a verdict even for tiny classes.

Holding out 20 % of a class of 5 images tests the methods on 1 image and trains them on 4.
Stratified K-fold cross-validation instead tests every real image exactly once, by classifiers
(and a generator, a judge and proxy worlds) that never saw it: in fold f the whole job (balance,
train, predict) runs on the other folds' images alone, and predicts fold f. The per-class
figures and the gan − baseline / gan − oversample comparisons are computed over the pooled
predictions; the bootstrap resamples images within each (fold, class) stratum (a class with
fewer than 2 images a fold as a whole) and the classifier seeds, so the intervals respect the
fold structure; a class with fewer than 20 images gets its verdict from an exact sign test.
balanced.zip still comes from one final run on every real image: the cross-validated figures
estimate that procedure.

K = min(5, the smallest class's image count), at least 2. One repeat (every image predicted
once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset

MAX_FOLDS = 5
MIN_TEST_IMAGES_HOLDOUT = 10  # auto: cross-validate when a minority class would get fewer


def resolve_evaluation(cfg: RunConfig, ds: ImageDataset, minority: list[int]) -> tuple[str, str]:
    """("holdout" | "cross-validation", why) for this dataset under cfg.evaluation."""
    if ds.test_source == "explicit":
        why = "the zip has a test/ folder: its images are the held-out test set"
        if cfg.evaluation == "cross-validation":
            why += " (cross-validation was asked for, but a given test set is kept as given)"
        return "holdout", why
    counts = np.bincount(all_labels(ds), minlength=len(ds.class_names))
    if counts.min() < 2:
        return "holdout", "a class has a single image: it cannot be both trained and tested on"
    if cfg.evaluation == "holdout":
        return "holdout", "asked for (evaluation holdout)"
    if cfg.evaluation == "cross-validation":
        return "cross-validation", "asked for (evaluation cross-validation)"
    test = ds.test_counts()
    few = [ds.class_names[c] for c in minority if test[c] < MIN_TEST_IMAGES_HOLDOUT]
    if few:
        return "cross-validation", (
            f"a {cfg.test_fraction:.0%} hold-out would test minority class(es) "
            f"{', '.join(few[:5])} on fewer than {MIN_TEST_IMAGES_HOLDOUT} images each; "
            "cross-validation tests every image once"
        )
    return "holdout", (
        f"every minority class has at least {MIN_TEST_IMAGES_HOLDOUT} held-out test images"
    )


def all_labels(ds: ImageDataset) -> np.ndarray:
    return torch.cat([ds.train_labels, ds.test_labels]).numpy()


def merged(ds: ImageDataset) -> ImageDataset:
    """The split dataset's training and test images together, as training images."""
    return replace(
        ds,
        train_images=torch.cat([ds.train_images, ds.test_images]),
        train_labels=torch.cat([ds.train_labels, ds.test_labels]),
        train_entries=[*ds.train_entries, *ds.test_entries],
        test_images=ds.test_images[:0],
        test_labels=ds.test_labels[:0],
        test_entries=[],
    )


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) of every image: each class's images dealt round-robin in a random
    order, from a random first fold, so every fold holds each class's share."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (np.arange(len(idx)) + rng.integers(k)) % k
    return fold


def fold_count(labels: np.ndarray) -> int:
    return int(max(2, min(MAX_FOLDS, np.bincount(labels).min())))


def fold_dataset(everything: ImageDataset, folds: np.ndarray, f: int) -> ImageDataset:
    """Fold f's images as the test set, the other folds' as the training set."""
    test, train = np.flatnonzero(folds == f), np.flatnonzero(folds != f)
    x, y, names = everything.train_images, everything.train_labels, everything.train_entries
    return replace(
        everything,
        train_images=x[torch.as_tensor(train)],
        train_labels=y[torch.as_tensor(train)],
        train_entries=[names[i] for i in train],
        test_images=x[torch.as_tensor(test)],
        test_labels=y[torch.as_tensor(test)],
        test_entries=[names[i] for i in test],
        test_source="fold",
    )


@dataclass
class FoldResult:
    """What one fold's job gives back: predictions of its test images by every member."""

    preds: np.ndarray  # int [M, T_f]
    method_of: list[str]
    seed_of: list[int]
    extra: object = None  # the caller's (the first fold's comparison, for the quality figures)


@dataclass
class CrossValidation:
    """Pooled predictions: every real image predicted once, by members that never saw it."""

    preds: np.ndarray  # int [M, N]
    labels: np.ndarray  # [N]
    strata: np.ndarray  # [N] fold * num_classes + class: the bootstrap resamples within these
    method_of: list[str]
    seed_of: list[int]
    folds: int
    fold_sizes: list[int]
    first: FoldResult


def cross_validate(
    everything: ImageDataset,
    seed: int,
    run_fold: Callable[[ImageDataset, int, int], FoldResult],
) -> CrossValidation:
    """run_fold(fold dataset, f, K) for every fold; the predictions pooled in image order."""
    labels = everything.train_labels.numpy()
    k = fold_count(labels)
    folds = stratified_folds(labels, k, seed)
    n = len(labels)
    preds, first, members = None, None, None
    for f in range(k):
        result = run_fold(fold_dataset(everything, folds, f), f, k)
        if preds is None:
            preds = np.zeros((result.preds.shape[0], n), dtype=np.int64)
            first, members = result, (result.method_of, result.seed_of)
        if (result.method_of, result.seed_of) != members:
            raise RuntimeError("every fold must train the same (method, seed) members")
        preds[:, folds == f] = result.preds
    # Resample within (fold, class) where a class has at least 2 images a fold; a class with
    # fewer is resampled as a whole (a stratum of one image would never vary).
    n_classes = len(everything.class_names)
    per_fold = np.bincount(labels, minlength=n_classes) / k
    strata = np.where(per_fold[labels] >= 2, folds * n_classes + labels, k * n_classes + labels)
    return CrossValidation(
        preds=preds,
        labels=labels,
        strata=strata,
        method_of=first.method_of,
        seed_of=first.seed_of,
        folds=k,
        fold_sizes=np.bincount(folds, minlength=k).tolist(),
        first=first,
    )


def report_section(method: str, reason: str, cv: CrossValidation | None) -> dict:
    """report.json's `evaluation` section."""
    out: dict = {"method": method, "reason": reason}
    if cv is not None:
        out.update(
            folds=cv.folds,
            repeats=1,
            fold_sizes=cv.fold_sizes,
            note=(
                "stratified k-fold cross-validation: every real image was tested once, by "
                "classifiers, a generator and a judge trained on the other folds only; the "
                "figures are cross-validated estimates of the procedure that built "
                "balanced.zip, which was made by one more run on every real image"
            ),
        )
    return out
