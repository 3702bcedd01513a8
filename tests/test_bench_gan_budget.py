"""bench/gan_budget.py: candidate runs paired draw by draw with the reference run."""

from __future__ import annotations

import json

import pytest

from bench import gan_budget


def run_file(tmp_path, name, options, gan_of, dataset="mnist"):
    """A seed-protocol JSON with k = 10, draws 0..2: gan = gan_of(draw), oversample 0.9."""
    rows = [
        {
            "k": 10,
            "draw": d,
            "gan": {"minority": gan_of(d)},
            "oversample": {"minority": 0.9},
        }
        for d in range(3)
    ]
    path = tmp_path / f"{name}.json"
    doc = {"settings": {"dataset": dataset, "options": options}, "rows": rows}
    path.write_text(json.dumps(doc))
    return path


def test_candidate_is_paired_with_the_reference_by_draw(tmp_path):
    ref = run_file(tmp_path, "ref", {"preset": "standard"}, lambda d: 0.90 + 0.05 * d)
    # The same draw-to-draw spread, 0.01 higher: the paired difference has no spread at all.
    cand = run_file(
        tmp_path, "cand", {"gan_iterations": 1000, "gan_lr": 6e-4}, lambda d: 0.91 + 0.05 * d
    )
    lines = gan_budget.compare([ref, cand]).splitlines()
    ref_row = next(line for line in lines if "(reference)" in line)
    cand_row = next(line for line in lines if "1000 it, lr 0.0006" in line)
    assert "3000 it, lr 0.0002" in ref_row
    assert "0.960 ± 0.050" in cand_row  # the candidate's own mean ± sd over draws
    assert "+0.060 [" in cand_row  # its GAN − oversample
    assert cand_row.rstrip(" |").endswith("+0.010 [+0.010, +0.010]")


def test_runs_of_different_datasets_are_refused(tmp_path):
    ref = run_file(tmp_path, "ref", {}, lambda d: 0.9)
    other = run_file(tmp_path, "other", {}, lambda d: 0.9, dataset="digits8")
    with pytest.raises(ValueError, match="different datasets"):
        gan_budget.compare([ref, other])
