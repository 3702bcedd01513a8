"""The proxy test: which generator, and what share of generated images, this dataset supports.

A threshold tuned on one protocol does not carry over (a deformation model that suits the
digit 1 turns other digits into their neighbours). The evidence has to come from the dataset
itself. So the job re-plays its own situation on classes where the answer is known:

* A proxy world cuts one well-stocked class B down to as many images as the smallest
  minority class has (k). B's other images, and a fifth of every other well-stocked class
  (at most HELD_OUT_OTHER each), are held out; the world trains on the rest.
* Every candidate generator makes B's missing images from the world's training images alone,
  through the same filter as the real job, at each candidate share (the rest of B is filled
  with repeated real images, as oversampling does); the real minority classes are oversampled.
* A classifier per (world, option) is trained as the job trains its classifiers (same epochs,
  batch, augmentation); all options of a world start from the same weights. Score: balanced
  accuracy over the held-out real images, and B's recall, each minus plain oversampling's.

An option is chosen only when the evidence is for it: mean gain in balanced accuracy of at
least MIN_GAIN, above zero by one standard error over the worlds, and no loss in B's recall
on average; the best such option wins, else 0 % generated (plain oversampling). Worlds use
only training images, never the job's test images, so the report's test figures stay honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

MIN_HELD_OUT = 10  # B needs k + this many images to be a proxy class
HELD_OUT_B = 200  # at most this many of B's held-out images are scored (cost of predicting)
HELD_OUT_OTHER = 50  # at most this many images of every other well-stocked class held out
OTHER_FRACTION = 0.2  # share of every other well-stocked class held out
MIN_GAIN = 0.005  # balanced accuracy, proxy mean: smaller gains are not worth the risk
NO_EVIDENCE_SHARE = 0.5  # share used when the dataset has no class to run a proxy on
# 97.5 % quantile of Student's t by degrees of freedom (95 % two-sided intervals).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}

Option = tuple[str, float]  # (generator, share); ("oversample", 0.0) is the reference
OVERSAMPLE: Option = ("oversample", 0.0)


@dataclass
class World:
    """A training set carved from the job's: the job itself (reduced None) or a proxy world."""

    train: np.ndarray  # int64 indices into the job's training images this world trains on
    need: dict[int, int]  # class -> images to add (generated or repeated) to reach the target
    held_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # scored on
    reduced: int | None = None  # proxy: the well-stocked class cut to k images
    kept: int = 0  # proxy: images of the reduced class it keeps

    def describe(self, class_names: list[str]) -> dict:
        """The report's line for a proxy world."""
        return {
            "class": class_names[self.reduced] if self.reduced is not None else None,
            "kept": self.kept,
            "held_out": len(self.held_out),
            "train_images": len(self.train),
        }


def proxy_worlds(
    labels: np.ndarray, need: dict[int, int], target: int, worlds: int, seed: int
) -> list[World]:
    """Up to `worlds` proxy worlds, cycling over the well-stocked classes, largest first."""
    counts = np.bincount(labels)
    minority = {c for c, n in need.items() if n > 0}
    k = min(int(counts[c]) for c in minority)
    stocked = [c for c in np.argsort(-counts, kind="stable").tolist() if c not in minority]
    eligible = [c for c in stocked if counts[c] >= k + MIN_HELD_OUT]
    out = []
    for w in range(worlds if eligible else 0):
        b = eligible[w % len(eligible)]
        rng = np.random.default_rng([seed, w])
        of_b = rng.permutation(np.flatnonzero(labels == b))
        out_of_training = [of_b[k:]]
        held = [of_b[k : k + HELD_OUT_B]]
        for c in stocked:
            if c == b:
                continue
            idx = np.flatnonzero(labels == c)
            n = min(HELD_OUT_OTHER, int(len(idx) * OTHER_FRACTION))
            if n >= 1 and len(idx) - n >= 1:
                drop = rng.choice(idx, n, replace=False)
                out_of_training.append(drop)
                held.append(drop)
        train = np.setdiff1d(np.arange(len(labels)), np.concatenate(out_of_training))
        out.append(
            World(
                train=train,
                need={b: target - k},
                held_out=np.sort(np.concatenate(held)),
                reduced=b,
                kept=k,
            )
        )
    return out


@dataclass
class OptionScore:
    """One option's per-world differences to oversampling on the held-out real images."""

    balanced: np.ndarray  # [W] balanced accuracy, option − oversample
    minority: np.ndarray  # [W] recall of the reduced class, option − oversample

    def summary(self) -> dict:
        return {"balanced": _mean_ci(self.balanced), "minority": _mean_ci(self.minority)}

    def supported(self) -> bool:
        b = self.balanced
        se = b.std(ddof=1) / math.sqrt(len(b)) if len(b) > 1 else 0.0
        return b.mean() >= MIN_GAIN and b.mean() - se > 0 and self.minority.mean() >= 0


def score_predictions(
    preds: np.ndarray, labels: np.ndarray, world: World
) -> tuple[np.ndarray, np.ndarray]:
    """(balanced accuracy [M], recall of the reduced class [M]) of members' predictions.

    preds: int [M, len(world.held_out)] predicted classes of the world's held-out images;
    labels: their true classes. Balanced accuracy averages the recall of every class that has
    held-out images.
    """
    classes = np.unique(labels)
    recall = np.stack([(preds[:, labels == c] == c).mean(1) for c in classes], 1)  # [M, C]
    b = int(np.flatnonzero(classes == world.reduced)[0])
    return recall.mean(1), recall[:, b]


@dataclass
class Selection:
    """What the job uses for its minority classes, and why (report: gan.<class>.selection)."""

    generator: str
    share: float
    reason: str
    candidates: list[dict] = field(default_factory=list)
    worlds: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "chosen": self.generator,
            "share": self.share,
            "reason": self.reason,
            "candidates": self.candidates,
            "proxy_worlds": self.worlds,
        }


def choose(
    scores: dict[Option, OptionScore], fixed_share: float | None, fallback: str
) -> Selection:
    """The option the evidence supports (see the module docstring).

    fixed_share: the user's share (then only the generator is chosen, by best mean gain);
    None = choose the share too. fallback: the generator named when nothing is supported.
    """
    rows = [{"generator": g, "share": s, **score.summary()} for (g, s), score in scores.items()]
    if fixed_share is not None:
        (g, s), best = max(scores.items(), key=lambda kv: kv[1].balanced.mean())
        return Selection(
            g,
            s,
            f"share {s:g} asked for; {g} scored best on the proxy test "
            f"({best.balanced.mean():+.3f} balanced accuracy against oversampling)",
            rows,
        )
    supported = {o: sc for o, sc in scores.items() if sc.supported()}
    if not supported:
        return Selection(
            fallback,
            0.0,
            "no candidate beat oversampling on the proxy test by enough "
            f"(at least {MIN_GAIN:.1%} balanced accuracy, above 0 by one standard error, and "
            "no loss of the class's recall): the missing images are repeated real ones",
            rows,
        )
    (g, s), best = max(supported.items(), key=lambda kv: kv[1].balanced.mean())
    return Selection(
        g,
        s,
        f"{g} at share {s:g} beat oversampling on the proxy test: "
        f"{best.balanced.mean():+.3f} balanced accuracy, {best.minority.mean():+.3f} recall of "
        "the cut-down class, mean over the proxy worlds",
        rows,
    )


def _mean_ci(d: np.ndarray) -> dict:
    mean = float(d.mean())
    if len(d) < 2:
        return {"diff": round(mean, 4), "ci95": None}
    half = T975.get(len(d) - 1, 1.96) * d.std(ddof=1) / math.sqrt(len(d))
    return {"diff": round(mean, 4), "ci95": [round(mean - half, 4), round(mean + half, 4)]}
