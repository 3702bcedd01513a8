"""The filter of generated images (pipeline/filtering.py) on inputs built by hand."""

from __future__ import annotations

import pytest
import torch

from pipeline.filtering import (
    FilterConfig,
    nearest_real_distance,
    select,
    typical_neighbour_gap,
)

CFG = FilterConfig(min_prob=0.5)


def numbered(n: int) -> torch.Tensor:
    """n candidates, candidate i filled with the value i, so the kept ones can be told apart."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()


def ids(images: torch.Tensor) -> list[int]:
    return [int(img[0, 0, 0]) for img in images]


def counts_add_up(counts: dict, need: int) -> None:
    rejected = counts["rejected_label"] + counts["rejected_copy"]
    assert counts["candidates"] == rejected + counts["passed"]
    assert counts["kept"] + counts["fallback_real"] == need
    assert counts["kept"] == min(need, counts["passed"])


def test_drops_low_probability_and_near_copies():
    probs = torch.full((10,), 0.9)
    probs[2] = 0.1  # the judge does not see the class
    probs[7] = 0.49  # just under the threshold
    dist = torch.ones(10)
    dist[5] = 0.01  # a near-copy of a real image
    dist[7] = 0.01  # both: counted once, as a label rejection
    kept, counts = select(numbered(10), probs, dist, 5, CFG, copy_threshold=0.2, seed=0)
    assert kept.shape == (5, 1, 4, 4) and kept.dtype == torch.uint8
    assert len(set(ids(kept))) == 5 and not {2, 5, 7} & set(ids(kept))
    assert counts["rejected_label"] == 2 and counts["rejected_copy"] == 1
    assert counts["passed"] == 7 and counts["fallback_real"] == 0
    assert counts["min_prob"] == 0.5 and counts["copy_threshold"] == 0.2
    counts_add_up(counts, 5)


def test_never_tops_up_with_rejected_candidates():
    """Too few passed: only the passing ones come back; the rest falls back to real images."""
    probs = torch.tensor([0.9, 0.1, 0.8, 0.3, 0.95, 0.2])
    dist = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0])  # 4: a copy, though the judge likes it
    kept, counts = select(numbered(6), probs, dist, 4, CFG, copy_threshold=0.1, seed=0)
    assert sorted(ids(kept)) == [0, 2]  # passed: 0 and 2, nothing else
    assert counts["passed"] == 2 and counts["kept"] == 2 and counts["fallback_real"] == 2
    assert counts["rejected_label"] == 3 and counts["rejected_copy"] == 1
    counts_add_up(counts, 4)


def test_default_check_is_strict():
    """M2m's acceptance rule: the judge must give the class at least 0.9."""
    probs = torch.tensor([0.95, 0.89, 0.9, 0.5])
    kept, counts = select(numbered(4), probs, torch.ones(4), 4, FilterConfig(), 0.1, seed=0)
    assert sorted(ids(kept)) == [0, 2] and counts["fallback_real"] == 2
    assert counts["min_prob"] == 0.9


@pytest.mark.parametrize("need", [1, 6, 12])
def test_keeps_at_most_need_and_only_passing(need):
    gen = torch.Generator().manual_seed(need)
    probs, dist = torch.rand(12, generator=gen), torch.rand(12, generator=gen)
    kept, counts = select(numbered(12), probs, dist, need, CFG, copy_threshold=0.3, seed=1)
    passing = {i for i in range(12) if probs[i] >= 0.5 and dist[i] >= 0.3}
    assert len(kept) == min(need, len(passing)) and set(ids(kept)) <= passing
    assert len(set(ids(kept))) == len(kept)  # no candidate twice
    counts_add_up(counts, need)
    assert counts["fallback_real"] == max(0, need - counts["passed"])


def test_seed_decides_which_passing_candidates_are_kept():
    probs, dist = torch.full((40,), 0.9), torch.ones(40)
    picks = {tuple(ids(select(numbered(40), probs, dist, 5, CFG, 0.1, seed=s)[0])) for s in (0, 1)}
    again = ids(select(numbered(40), probs, dist, 5, CFG, 0.1, seed=0)[0])
    assert len(picks) == 2 and tuple(again) in picks


def test_distances_in_rms_units():
    black = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    white = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    d = nearest_real_distance(torch.cat([black, white]), torch.cat([black, black]))
    assert d.tolist() == pytest.approx([0.0, 2.0])  # -1 vs 1 in every pixel
    # Class 0: black, white, white (gaps 2, 0, 0); class 1: black, black (0, 0).
    images = torch.cat([black, white, white, black, black])
    assert typical_neighbour_gap(images, torch.tensor([0, 0, 0, 1, 1])) == 0.0
    grey = torch.full((1, 1, 4, 4), 51, dtype=torch.uint8)  # 0.4 from black in [-1, 1] units
    assert typical_neighbour_gap(
        torch.cat([black, grey, black, grey, white]), torch.tensor([0, 0, 1, 1, 2])
    ) == pytest.approx(0.4)  # class 2, one image, has no neighbour and is left out
