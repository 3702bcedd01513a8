"""Bootstrap confidence intervals and verdicts for the classifier comparison.

What is resampled, per bootstrap draw:
  * test images, with replacement, within each class (stratified: every class keeps its number
    of test images, so per-class accuracy is always defined and the class mix is the real one);
  * classifier seeds, with replacement, from the seeds that were trained.
Every method sees the same resampled images and the same resampled seed indices in a draw
(members with the same seed index start from the same weights), so a difference between two
methods is a paired difference. A method's figure in a draw is the mean over the drawn seeds
of that seed's figure on the drawn images, the same way the point estimate is the mean over
seeds on the whole test set. Intervals are percentile intervals of the draws.

Limits worth knowing: with one seed the interval covers test-set sampling only, not training
randomness; with few seeds (e.g. 3) resampling them is a rough approximation; when a class's
test images are all right (or all wrong) for every seed the bootstrap interval collapses to a
point, which understates the uncertainty of small test sets. Per-class accuracy intervals are
therefore widened to cover at least the Wilson score interval of the class's test images
(`wilson_interval`), and a verdict needs at least MIN_TEST_IMAGES test images of the class.
No correction for comparing several classes is made: each interval is a 95 % interval on its
own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
DRAWS = 2000
MIN_TEST_IMAGES = 20  # below this many test images of a class, no verdict is drawn
VERDICTS = ("helped", "no clear difference", "hurt")
_CHUNK_ELEMENTS = 2_000_000  # resampled image indices held at once (memory bound)


@dataclass
class MethodDraws:
    """One method's figures in every bootstrap draw (draws along axis 0)."""

    per_class_accuracy: np.ndarray  # [B, K], nan for a class without test images
    per_class_precision: np.ndarray  # [B, K], 0 for a class never predicted
    per_class_f1: np.ndarray  # [B, K]
    accuracy: np.ndarray  # [B]
    balanced_accuracy: np.ndarray  # [B]
    macro_f1: np.ndarray  # [B]


def bootstrap_methods(
    preds: np.ndarray,
    y_true: np.ndarray,
    method_of: list[str],
    seed_of: list[int],
    num_classes: int,
    draws: int = DRAWS,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> dict[str, MethodDraws]:
    """Bootstrap every method's figures; preds: [M, T] predictions of M (method, seed) members.

    Every method must have been trained with the same seed indices (paired design). strata:
    a group per test image that images are resampled within (None: their class; a finer
    grouping such as fold x class keeps each fold's share of every class).
    """
    preds, y_true = np.asarray(preds), np.asarray(y_true)
    seeds = _seed_table(method_of, seed_of)  # method -> member index per seed index
    n_seeds = len(next(iter(seeds.values())))
    img_rng, seed_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    seed_draws = seed_rng.integers(0, n_seeds, size=(draws, n_seeds))  # [B, S]
    groups = y_true if strata is None else np.asarray(strata)
    per_member = _resampled_figures(preds, y_true, num_classes, draws, img_rng, groups)
    out = {}
    for method, members in seeds.items():
        # v[members][s] = seed s's figure in every draw; pick the drawn seeds and average them.
        drawn = {
            name: _mean_over_drawn_seeds(v[members], seed_draws) for name, v in per_member.items()
        }
        out[method] = MethodDraws(**drawn)
    return out


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """[2, ...] lower and upper percentile bounds over axis 0 (nan-aware)."""
    tail = 100 * (1 - level) / 2
    with np.errstate(invalid="ignore"):
        return np.nanpercentile(values, [tail, 100 - tail], axis=0)


def wilson_interval(p: np.ndarray, n: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """[2, ...] Wilson score interval of a proportion p observed on n trials (nan where n = 0).

    Unlike a percentile bootstrap it does not collapse to a point when p is 0 or 1.
    """
    z = _z(level)
    p, n = np.asarray(p, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.stack([centre - half, centre + half])


def sign_test(diff: np.ndarray) -> float:
    """Two-sided exact sign test: p-value that per-image differences (ties dropped) lean one
    way by chance alone."""
    pos, neg = int((diff > 0).sum()), int((diff < 0).sum())
    n = pos + neg
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(pos, neg) + 1)) / 2**n
    return min(1.0, 2 * tail)


def small_sample_verdict(diff: np.ndarray) -> tuple[str, str]:
    """(verdict, note) for a class with fewer than MIN_TEST_IMAGES test images.

    diff: per test image of the class, the gan method's share of seeds that got it right minus
    the other method's. The bootstrap interval is not trusted with so few images (it collapses
    when every image is right or wrong), so the verdict comes from an exact two-sided sign test
    over the images the two methods disagree on: `helped` or `hurt` only at p < 0.05 (at
    least 6 disagreements, all one way)."""
    p = sign_test(diff)
    word = "no clear difference"
    if p < 1 - LEVEL:
        word = "helped" if (diff > 0).sum() > (diff < 0).sum() else "hurt"
    note = (
        f"only {len(diff)} test image(s) of this class: the verdict comes from an exact sign "
        f"test over the {int((diff != 0).sum())} image(s) the methods disagree on (p = {p:.3f}), "
        f"not from the bootstrap interval (which needs at least {MIN_TEST_IMAGES})"
    )
    return word, note


def verdict(lo: float, hi: float, test_count: int) -> tuple[str, str | None]:
    """(verdict, note) for a difference whose 95 % interval is [lo, hi].

    `helped` only when the whole interval is above 0, `hurt` only when it is below 0. With
    fewer than MIN_TEST_IMAGES test images the bootstrap interval is not trustworthy (it can
    collapse to a point), so no verdict is drawn from it.
    """
    if test_count < MIN_TEST_IMAGES:
        note = (
            f"only {test_count} test image(s) of this class: the test set is too small to tell "
            f"(a verdict needs at least {MIN_TEST_IMAGES})"
        )
        return "no clear difference", note
    if lo > 0:
        return "helped", None
    if hi < 0:
        return "hurt", None
    return "no clear difference", None


def _z(level: float) -> float:
    # The standard library's normal quantile (same value as scipy.stats.norm.ppf): importing
    # scipy.stats for this one number took 2.6 s of a fresh worker's warm-up under cProfile
    # on an H200 (docs/results/warmup_profile_2026-11-29_h200.log).
    return NormalDist().inv_cdf(0.5 + level / 2)


def _seed_table(method_of: list[str], seed_of: list[int]) -> dict[str, np.ndarray]:
    table: dict[str, dict[int, int]] = {}
    for m, (method, s) in enumerate(zip(method_of, seed_of, strict=True)):
        table.setdefault(method, {})[s] = m
    seed_sets = {tuple(sorted(v)) for v in table.values()}
    if len(seed_sets) != 1:
        raise ValueError(f"every method needs the same seed indices, got {sorted(seed_sets)}")
    return {method: np.array([v[s] for s in sorted(v)]) for method, v in table.items()}


def _resampled_figures(
    preds: np.ndarray,
    y_true: np.ndarray,
    k: int,
    draws: int,
    rng: np.random.Generator,
    groups: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every member's figures on every stratified resample: name -> [M, B, ...].

    Confusion matrices are built a chunk of draws at a time and reduced to figures at once,
    so memory stays bounded for many test images or many classes.
    """
    m, t = preds.shape
    codes = y_true[None, :] * k + preds  # [M, T]: (true, predicted) cell of each prediction
    by_class = [np.flatnonzero(groups == g) for g in np.unique(groups)]  # resampled within
    out: dict[str, np.ndarray] = {}
    chunk = max(1, _CHUNK_ELEMENTS // max(t, k * k, 1))
    for start in range(0, draws, chunk):
        b = min(chunk, draws - start)
        idx = np.concatenate(
            [ids[rng.integers(0, len(ids), size=(b, len(ids)))] for ids in by_class], axis=1
        )  # [b, T]: each group (class, or fold x class) resampled within itself
        offset = (np.arange(b) * k * k)[:, None]
        for j in range(m):
            flat = (codes[j][idx] + offset).ravel()
            cm = np.bincount(flat, minlength=b * k * k).reshape(b, k, k)
            for name, v in _figures(cm).items():
                if name not in out:
                    out[name] = np.empty((m, draws, *v.shape[1:]))
                out[name][j, start : start + b] = v
    return out


def _figures(cm: np.ndarray) -> dict[str, np.ndarray]:
    """The figures of pipeline.metrics, for confusion matrices [..., K, K] (batched)."""
    diag = np.diagonal(cm, axis1=-2, axis2=-1).astype(float)
    support, predicted = cm.sum(-1), cm.sum(-2)
    present = support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(present, diag / support, np.nan)
        precision = np.where(predicted > 0, diag / predicted, 0.0)
        r = np.nan_to_num(recall)
        f1 = np.where(precision + r > 0, 2 * precision * r / (precision + r), 0.0)
        n_present = present.sum(-1)
        return {
            "per_class_accuracy": recall,
            "per_class_precision": precision,
            "per_class_f1": f1,
            "accuracy": diag.sum(-1) / np.maximum(support.sum(-1), 1),
            "balanced_accuracy": np.nansum(recall, -1) / n_present,
            "macro_f1": np.where(present, f1, 0.0).sum(-1) / n_present,
        }


def _mean_over_drawn_seeds(values: np.ndarray, seed_draws: np.ndarray) -> np.ndarray:
    """values: [S, B, ...] per seed and draw; seed_draws: [B, S] -> [B, ...]."""
    b = np.arange(values.shape[1])[:, None]
    return values[seed_draws, b].mean(axis=1)
