"""The proxy test's bookkeeping (pipeline/selection.py), on labels and predictions built by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.selection import (
    HELD_OUT_B,
    HELD_OUT_OTHER,
    MIN_GAIN,
    OptionScore,
    World,
    choose,
    proxy_worlds,
    score_predictions,
)


def labels_of(counts: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_worlds_cut_a_big_class_to_the_minority_size_and_hold_out_the_rest():
    labels = labels_of([300, 3, 120, 40])  # class 1 is the minority (3 images)
    worlds = proxy_worlds(labels, {1: 297}, target=300, worlds=3, seed=0)
    assert [w.reduced for w in worlds] == [0, 2, 3]  # the well-stocked classes, largest first
    for w in worlds:
        train, held = set(w.train.tolist()), set(w.held_out.tolist())
        assert not train & held  # never scored on an image it trained on
        b = w.reduced
        assert int((labels[w.train] == b).sum()) == 3 == w.kept  # cut to the minority's size
        assert w.need == {b: 300 - 3}
        assert int((labels[w.held_out] == b).sum()) == min(HELD_OUT_B, int((labels == b).sum()) - 3)
        # The minority class is untouched: all its images train, none is held out.
        assert int((labels[w.train] == 1).sum()) == 3 and int((labels[w.held_out] == 1).sum()) == 0
        for c in {0, 2, 3} - {b}:  # a fifth of every other well-stocked class, at most 50
            n = int((labels == c).sum())
            assert int((labels[w.held_out] == c).sum()) == min(HELD_OUT_OTHER, int(n * 0.2))
        # Nothing is lost: every image trains, is held out, or is one of B's dropped images.
        dropped = set(np.flatnonzero(labels == b).tolist()) - train
        assert train | held | dropped == set(range(len(labels)))


def test_worlds_cycle_and_draw_afresh_when_classes_run_out():
    labels = labels_of([50, 2])
    worlds = proxy_worlds(labels, {1: 48}, target=50, worlds=3, seed=1)
    assert [w.reduced for w in worlds] == [0, 0, 0]
    kept = [tuple(sorted(set(w.train.tolist()) & set(range(50)))) for w in worlds]
    assert len(set(kept)) == 3  # a different draw of the 2 kept images in each world


def test_no_world_without_a_class_big_enough():
    # A proxy class needs the minority's size + 10 images; 11 < 3 + 10 is too few.
    assert proxy_worlds(labels_of([11, 3]), {1: 8}, target=11, worlds=3, seed=0) == []
    assert len(proxy_worlds(labels_of([13, 3]), {1: 10}, target=13, worlds=2, seed=0)) == 2


def test_scores_are_balanced_accuracy_and_the_cut_class_recall():
    world = World(train=np.arange(0), need={0: 5}, held_out=np.arange(6), reduced=0)
    truth = np.array([0, 0, 0, 0, 2, 2])
    preds = np.array(
        [
            [0, 0, 0, 0, 2, 2],  # perfect
            [0, 0, 2, 2, 2, 2],  # half of class 0
            [0, 0, 0, 0, 0, 0],  # all class 0: class 2 lost
        ]
    )
    balanced, recall = score_predictions(preds, truth, world)
    assert balanced.tolist() == pytest.approx([1.0, 0.75, 0.5])
    assert recall.tolist() == pytest.approx([1.0, 0.5, 1.0])


def score(balanced: list[float], minority: list[float]) -> OptionScore:
    return OptionScore(np.array(balanced), np.array(minority))


def test_choose_takes_the_best_supported_option():
    scores = {
        ("per-class", 0.5): score([0.01, 0.02, 0.015], [0.02, 0.03, 0.01]),
        ("transfer", 1.0): score([0.05, 0.04, 0.06], [0.1, 0.1, 0.1]),
        ("translation", 1.0): score([0.2, -0.15, 0.1], [0.3, -0.2, 0.1]),  # noisy: not supported
    }
    sel = choose(scores, None, "per-class")
    assert (sel.generator, sel.share) == ("transfer", 1.0) and "beat oversampling" in sel.reason
    assert len(sel.candidates) == 3
    row = next(c for c in sel.candidates if c["generator"] == "transfer")
    assert row["balanced"]["diff"] == pytest.approx(0.05)
    lo, hi = row["balanced"]["ci95"]
    assert lo < 0.05 < hi


@pytest.mark.parametrize(
    "balanced,minority",
    [
        ([MIN_GAIN / 2] * 3, [0.1] * 3),  # too small a gain
        ([0.05, 0.05, 0.05], [-0.01, -0.01, -0.01]),  # the class's recall got worse
        ([0.3, -0.25, 0.0], [0.1, 0.1, 0.1]),  # not above 0 by one standard error
    ],
)
def test_choose_falls_back_to_oversampling(balanced, minority):
    sel = choose({("per-class", 1.0): score(balanced, minority)}, None, "per-class")
    assert sel.share == 0.0 and "repeated real ones" in sel.reason


def test_a_fixed_share_only_chooses_the_generator():
    scores = {
        ("per-class", 1.0): score([-0.02, -0.01], [0.0, 0.0]),
        ("transfer", 1.0): score([-0.01, 0.0], [0.0, 0.0]),
    }
    sel = choose(scores, 1.0, "per-class")
    assert (sel.generator, sel.share) == ("transfer", 1.0) and "asked for" in sel.reason
