"""Cross-validated evaluation (pipeline/crossval.py): folds, bookkeeping, and a whole run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pipeline.run as run_module
from pipeline.config import RunConfig
from pipeline.crossval import (
    FoldResult,
    cross_validate,
    fold_count,
    fold_dataset,
    merged,
    resolve_evaluation,
    stratified_folds,
)
from pipeline.dataset import load_dataset
from pipeline.run import run_pipeline
from tests.pipeline.zips import class_folder_files, write_zip

# The smallest real job: the point is the bookkeeping, not the figures.
TINY = dict(
    preset="quick",
    device="cpu",
    engine="eager",
    gan_iterations=2,
    gan_width=8,
    gan_batch=8,
    epochs=1,
    seeds=2,
    generator="per-class",
    synthetic_share=1.0,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def flat_zip(tmp_path_factory) -> Path:
    """A flat class-folder zip (no test/): 30 images of a, 6 of b, 12 of c."""
    path = tmp_path_factory.mktemp("cv") / "flat.zip"
    return write_zip(path, class_folder_files({"a": 30, "b": 6, "c": 12}))


@pytest.mark.parametrize("counts", [[30, 6, 12], [5, 5], [2, 9, 40], [7]])
def test_folds_are_stratified_and_disjoint(counts):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    k = fold_count(labels)
    assert k == max(2, min(5, min(counts)))
    folds = stratified_folds(labels, k, seed=3)
    assert folds.shape == labels.shape and set(folds.tolist()) <= set(range(k))
    for c, n in enumerate(counts):  # every class spread evenly: per fold n // k or n // k + 1
        per_fold = np.bincount(folds[labels == c], minlength=k)
        assert per_fold.max() - per_fold.min() <= 1 and per_fold.sum() == n


def test_fold_datasets_never_train_on_their_test_images(flat_zip):
    everything = merged(load_dataset(flat_zip, 0.2, 0))
    assert len(everything.train_labels) == 48 and len(everything.test_labels) == 0
    assert sorted(everything.train_entries) == sorted(set(everything.train_entries))
    folds = stratified_folds(everything.train_labels.numpy(), 5, 0)
    tested = []
    for f in range(5):
        fold = fold_dataset(everything, folds, f)
        assert not set(fold.train_entries) & set(fold.test_entries)
        assert len(fold.train_entries) + len(fold.test_entries) == 48
        tested += fold.test_entries
    assert sorted(tested) == sorted(everything.train_entries)  # each image tested exactly once


def test_pooled_predictions_put_each_fold_back_in_place(flat_zip):
    everything = merged(load_dataset(flat_zip, 0.2, 0))
    seen = []

    def run_fold(fold, f, k):
        seen.append((f, k, len(fold.test_labels)))
        # "Predict" each test image's own label, shifted by the fold for the second member.
        truth = fold.test_labels.numpy()
        return FoldResult(np.stack([truth, (truth + f) % 3]), ["baseline", "gan"], [0, 0], f)

    cv = cross_validate(everything, 0, run_fold)
    assert cv.folds == 5 and [s[0] for s in seen] == list(range(5)) and cv.first.extra == 0
    assert sum(cv.fold_sizes) == 48 == cv.preds.shape[1]
    assert np.array_equal(cv.preds[0], cv.labels)  # every image's own prediction came back
    folds = stratified_folds(cv.labels, 5, 0)
    assert np.array_equal(cv.preds[1], (cv.labels + folds) % 3)
    # Strata: (fold, class) for a and c (>= 2 images a fold), the whole class for b (6 / 5).
    b = cv.labels == 1
    assert len(set(cv.strata[b].tolist())) == 1
    assert len(set(cv.strata[cv.labels == 0].tolist())) == 5


def test_no_generator_sees_a_fold_test_image(flat_zip, monkeypatch):
    """Through the bookkeeping: every synthesize call trains on images disjoint from the test
    images of the run it serves, and the last one (balanced.zip) on all 48."""
    calls = []
    original = run_module.synthesize

    def spy(ds, need, cfg, device, progress):
        calls.append((set(ds.train_entries), set(ds.test_entries), len(ds.train_entries)))
        return original(ds, need, cfg, device, progress)

    monkeypatch.setattr(run_module, "synthesize", spy)
    report = run_pipeline(flat_zip, None, RunConfig(**TINY))
    assert report["evaluation"]["method"] == "cross-validation"
    final, *folds = calls
    assert final[2] == 48 and not final[1]  # the final run: every image, no test images
    assert len(folds) == report["evaluation"]["folds"] == 5
    for train, test, _ in folds:
        assert test and not train & test


def test_flat_zip_with_a_class_of_6_is_cross_validated(flat_zip, tmp_path):
    report = run_pipeline(flat_zip, tmp_path / "out", RunConfig(**TINY))
    ev = report["evaluation"]
    assert ev["method"] == "cross-validation" and ev["folds"] == 5 and ev["repeats"] == 1
    assert "b" in ev["reason"] and "estimates of the procedure" in ev["note"]
    rows = {c["name"]: c for c in report["classes"]}
    assert rows["b"]["test_count"] == 6 and rows["a"]["test_count"] == 30  # each image once
    assert rows["b"]["train_count"] == 6  # balanced.zip: every real image
    assert rows["b"]["synthetic_count"] + rows["b"]["repeated_real_count"] == 24
    # The same report sections as a holdout job, with a verdict and an interval for b.
    for key in ("methods", "comparisons", "statistics", "quality", "gan", "classes"):
        assert key in report
    comp = report["comparisons"]["b"]
    assert comp["test_count"] == 6
    for other in ("gan_vs_baseline", "gan_vs_oversample"):
        assert comp[other]["verdict"] in ("helped", "no clear difference", "hurt")
        assert len(comp[other]["difference_ci95"]) == 2 and "sign test" in comp[other]["note"]
    for m in report["methods"].values():
        assert sum(map(sum, m["confusion_matrix"])) == pytest.approx(48)  # pooled: all images
    assert "(fold, class)" in report["statistics"]["notes"][0]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["evaluation"] == ev
    assert "cross-validated" in (tmp_path / "out" / "report.html").read_text()


def test_holdout_forced_and_explicit_test_folder(flat_zip, tmp_path):
    ds = load_dataset(flat_zip, 0.2, 0)
    assert resolve_evaluation(RunConfig(evaluation="holdout"), ds, [1, 2])[0] == "holdout"
    assert resolve_evaluation(RunConfig(), ds, [1, 2])[0] == "cross-validation"
    files = class_folder_files({"a": 20, "b": 3}, prefix="train/")
    files |= class_folder_files({"a": 4, "b": 4}, prefix="test/", seed=5)
    explicit = load_dataset(write_zip(tmp_path / "t.zip", files), 0.2, 0)
    for evaluation in ("auto", "cross-validation"):
        method, why = resolve_evaluation(RunConfig(evaluation=evaluation), explicit, [1])
        assert method == "holdout" and "test/ folder" in why


def test_big_minority_classes_keep_holdout(tmp_path):
    path = write_zip(tmp_path / "big.zip", class_folder_files({"a": 100, "b": 60}))
    method, why = resolve_evaluation(RunConfig(), load_dataset(path, 0.2, 0), [1])
    assert method == "holdout" and "at least 10" in why


def test_evaluation_option_is_validated():
    with pytest.raises(ValueError, match="evaluation must be one of auto, holdout"):
        RunConfig.from_dict({"evaluation": "kfold"})


def test_holdout_run_reports_its_evaluation(tmp_path):
    path = write_zip(tmp_path / "h.zip", class_folder_files({"a": 20, "b": 8}))
    report = run_pipeline(path, None, RunConfig(**TINY, evaluation="holdout"))
    assert report["evaluation"]["method"] == "holdout" and "folds" not in report["evaluation"]
    expected = load_dataset(path, 0.2, 0).test_counts()
    assert [c["test_count"] for c in report["classes"]] == expected
