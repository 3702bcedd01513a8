"""Bootstrap intervals and verdicts on synthetic predictions with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation import evaluate_methods, evaluate_with_intervals
from pipeline.statistics import (
    MIN_TEST_IMAGES,
    bootstrap_methods,
    percentile_interval,
    sign_test,
    small_sample_verdict,
    verdict,
    wilson_interval,
)


def simulate(rng, y: np.ndarray, p_correct: list[float], k: int) -> np.ndarray:
    """Predictions that are right with probability p_correct[class], else another class."""
    right = rng.random(len(y)) < np.asarray(p_correct)[y]
    wrong = (y + 1 + rng.integers(0, k - 1, len(y))) % k
    return np.where(right, y, wrong)


def one_method(preds: np.ndarray, y: np.ndarray, k: int, draws: int = 500, seed: int = 0):
    return bootstrap_methods(preds[None], y, ["baseline"], [0], k, draws, seed)["baseline"]


def test_interval_covers_the_true_accuracy_at_about_the_nominal_rate():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    truth, reps, hits = 0.8, 200, 0
    for r in range(reps):
        preds = simulate(rng, y, [truth, 0.9], 2)
        lo, hi = percentile_interval(one_method(preds, y, 2, seed=r).per_class_accuracy[:, 0])
        hits += lo <= truth <= hi
    # Percentile intervals for a proportion with n = 100 cover about 93-95 %; 200 repetitions
    # give a standard error of about 1.6 points.
    assert 0.88 <= hits / reps <= 0.99


def test_interval_shrinks_with_more_test_images():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        y = np.repeat([0, 1], n)
        preds = simulate(rng, y, [0.8, 0.8], 2)
        lo, hi = percentile_interval(one_method(preds, y, 2).per_class_accuracy[:, 0])
        widths.append(hi - lo)
    # The width goes as 1/sqrt(n): 16 times the images, about a quarter of the width.
    assert widths[1] < widths[0] / 2.5


def test_resampled_seeds_widen_the_interval_when_seeds_disagree():
    y = np.repeat([0, 1], 100)
    always_right, always_wrong = y.copy(), 1 - y
    preds = np.stack([always_right, always_wrong])
    boot = bootstrap_methods(preds, y, ["gan", "gan"], [0, 1], 2, draws=400, seed=0)
    lo, hi = percentile_interval(boot["gan"].per_class_accuracy[:, 0])
    # Each draw averages two drawn seeds: 0, 0.5 or 1. Image resampling alone would give [0.5, 0.5].
    assert lo == 0.0 and hi == 1.0


def test_wilson_interval_matches_the_textbook_value():
    lo, hi = wilson_interval(np.array(0.5), np.array(100))
    assert (lo, hi) == (pytest.approx(0.4038, abs=1e-4), pytest.approx(0.5962, abs=1e-4))


@pytest.mark.parametrize("level", [0.8, 0.9, 0.95, 0.99])
def test_wilson_interval_uses_the_normal_quantile_of_its_level(level):
    from scipy.stats import norm

    z = norm.ppf(0.5 + level / 2)
    p, n = 0.3, 50
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(np.array(p), np.array(n), level)
    assert (lo, hi) == (
        pytest.approx(centre - half, abs=1e-12),
        pytest.approx(centre + half, abs=1e-12),
    )


def test_a_class_with_every_image_right_still_gets_an_interval_below_one():
    y = np.repeat([0, 1], 200)
    preds = np.where(y == 0, 0, np.where(np.arange(400) % 5 == 0, 0, 1))  # class 0 all right
    methods, _, _ = evaluate_with_intervals(
        np.stack([preds] * 3), y, ["baseline", "oversample", "gan"], [0, 0, 0], ["a", "b"], []
    )
    cell = methods["gan"]["per_class"]["a"]
    # The bootstrap alone gives [1, 1]; 200 of 200 right is consistent with about 98 %.
    assert cell["accuracy"] == 1.0
    assert cell["accuracy_ci95"][0] == pytest.approx(0.981, abs=0.002)
    assert cell["accuracy_ci95"][1] == 1.0


def test_bootstrap_is_reproducible_with_its_seed():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 60)
    preds = simulate(rng, y, [0.7, 0.8, 0.9], 3)
    a = one_method(preds, y, 3, seed=5).balanced_accuracy
    b = one_method(preds, y, 3, seed=5).balanced_accuracy
    c = one_method(preds, y, 3, seed=6).balanced_accuracy
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bootstrap_draws_centre_on_the_point_estimates():
    rng = np.random.default_rng(3)
    y = np.repeat([0, 1, 2], 150)
    preds = simulate(rng, y, [0.6, 0.8, 0.95], 3)
    point = evaluate_methods(preds[None], y, ["baseline"], ["a", "b", "c"])["baseline"]
    draws = one_method(preds, y, 3, draws=2000)
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert getattr(draws, key).mean() == pytest.approx(point[key], abs=0.01)
    assert draws.per_class_accuracy[:, 0].mean() == pytest.approx(
        point["per_class"]["a"]["accuracy"], abs=0.01
    )


def comparison(p_gan: float, p_base: float, n: int, same: bool = False) -> dict:
    """gan vs baseline vs oversample on class 0 (minority) with n test images per class."""
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], n)
    base = simulate(rng, y, [p_base, 0.9], 2)
    gan = base.copy() if same else simulate(rng, y, [p_gan, 0.9], 2)
    preds = np.stack([base, base, gan])
    _, comps, _ = evaluate_with_intervals(
        preds, y, ["baseline", "oversample", "gan"], [0, 0, 0], ["min", "maj"], [0], draws=1000
    )
    return comps["min"]["gan_vs_baseline"]


def test_clear_win_is_helped():
    c = comparison(0.95, 0.5, 200)
    assert c["verdict"] == "helped" and c["difference_ci95"][0] > 0 and c["note"] is None
    assert c["difference"] == pytest.approx(0.45, abs=0.08)


def test_clear_loss_is_hurt():
    c = comparison(0.5, 0.95, 200)
    assert c["verdict"] == "hurt" and c["difference_ci95"][1] < 0


def test_identical_predictions_are_no_clear_difference():
    c = comparison(0.8, 0.8, 200, same=True)
    assert c["verdict"] == "no clear difference"
    assert c["difference"] == 0 and c["difference_ci95"] == [0.0, 0.0]


def test_small_difference_on_a_small_test_set_is_no_clear_difference():
    c = comparison(0.85, 0.8, 60)
    assert c["difference_ci95"][0] < 0 < c["difference_ci95"][1]
    assert c["verdict"] == "no clear difference"


def test_classes_with_few_test_images_are_named_in_the_notes():
    y = np.repeat([0, 1], [8, 40])
    preds = np.stack([y, y, y])
    _, _, info = evaluate_with_intervals(
        preds, y, ["baseline", "oversample", "gan"], [0, 0, 0], ["tiny", "big"], []
    )
    assert any("class(es) tiny:" in n for n in info["notes"])


def test_few_test_images_get_a_sign_test_verdict_not_the_collapsed_interval():
    c = comparison(1.0, 0.0, 10)  # 10/10 against 0/10: the bootstrap interval is [1, 1]
    assert c["difference_ci95"] == [1.0, 1.0]
    # 10 disagreements, all for gan: exact two-sided sign test p = 2 / 2**10.
    assert c["verdict"] == "helped" and "sign test" in c["note"] and "p = 0.002" in c["note"]


@pytest.mark.parametrize(
    "diff,expected,p",
    [
        ([1, 1, 1, 1, 1, 1], "helped", 0.031),  # 6 of 6 one way: p = 2 / 64
        ([1, 1, 1, 1, 1, 0], "no clear difference", 0.062),  # 5 disagreements cannot decide
        ([-1, -1, -1, -1, -1, -1, -1], "hurt", 0.016),  # 7 of 7 the other way
        ([-1, -1, -1, -1, -1, -1, -1, 0.5], "no clear difference", 0.070),  # 7 against 1
        ([1, -1, 1, -1, 1, 1], "no clear difference", 0.688),
        ([0, 0, 0], "no clear difference", 1.0),
    ],
)
def test_sign_test_verdict(diff, expected, p):
    word, note = small_sample_verdict(np.array(diff, dtype=float))
    assert word == expected and "sign test" in note
    assert sign_test(np.array(diff, dtype=float)) == pytest.approx(p, abs=1e-3)


@pytest.mark.parametrize(
    "lo,hi,n,expected",
    [
        (0.01, 0.2, MIN_TEST_IMAGES, "helped"),
        (-0.2, -0.01, 200, "hurt"),
        (-0.01, 0.2, 200, "no clear difference"),
        (0.0, 0.2, 200, "no clear difference"),  # touching zero is not above it
        (0.5, 0.9, MIN_TEST_IMAGES - 1, "no clear difference"),
    ],
)
def test_verdict_rule(lo, hi, n, expected):
    assert verdict(lo, hi, n)[0] == expected


def test_report_figures_keep_old_keys_and_gain_intervals():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1, 2], 40)
    methods = ["baseline", "oversample", "gan"]
    preds = np.stack([simulate(rng, y, [0.7, 0.9, 0.9], 3) for _ in range(6)])
    out, comps, info = evaluate_with_intervals(
        preds, y, [m for m in methods for _ in range(2)], [0, 1] * 3, ["a", "b", "c"], [0]
    )
    gan = out["gan"]
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        lo, hi = gan[f"{key}_ci95"]
        assert lo <= gan[key] <= hi
    cell = gan["per_class"]["a"]
    assert {"accuracy", "f1", "accuracy_ci95", "f1_ci95"} <= set(cell)
    assert cell["accuracy_ci95"][0] <= cell["accuracy"] <= cell["accuracy_ci95"][1]
    assert len(gan["confusion_matrix"]) == 3 and gan["seeds"] == 2
    assert set(comps) == {"a"} and comps["a"]["test_count"] == 40
    assert set(comps["a"]) >= {"gan_vs_baseline", "gan_vs_oversample"}
    assert info["seeds"] == 2 and info["draws"] == 2000


def test_methods_with_different_seeds_are_refused():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="same seed"):
        bootstrap_methods(np.stack([y, y, y]), y, ["a", "a", "b"], [0, 1, 0], 2)
