"""Keep only generated images that pass a strict check: recognised, and not a copy of a real one.

A judge (a SmallCNN trained on the real training images, oversampled to balance so that it
does not simply vote for the big classes) scores every candidate; a candidate passes if the
judge gives its intended class at least `min_prob` (0.9: M2m's acceptance rule), and it is
not closer to a real training image of its class than `copy_fraction` times the typical
distance between a real image and its nearest same-class neighbour (pixels, RMS in [-1, 1]
units). At most `need` passing candidates are returned, in random order. A place no candidate
passed for falls back to a repeated real image, as M2m falls back to the real oversampled
image (counted as `fallback_real`; the caller fills it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.classifier import SmallCNN
from pipeline.gan import to_unit
from pipeline.quality import nearest_distances


@dataclass(frozen=True)
class FilterConfig:
    factor: int = 3  # candidates generated per image needed
    min_prob: float = 0.9  # judge's probability of the intended class, at least
    copy_fraction: float = 0.5  # near-copy: closer to a real image than this x typical NN gap


@torch.no_grad()
def judge_probabilities(judge: SmallCNN, images: torch.Tensor, cls: int) -> torch.Tensor:
    """Probability the judge (member 0) gives class `cls`, per image: float [N] on the CPU."""
    judge.eval()
    dev = next(judge.parameters()).device
    out = []
    for start in range(0, len(images), 1024):
        x = to_unit(images[start : start + 1024].to(dev))
        out.append(judge(x.unsqueeze(0))[0].softmax(-1)[:, cls].cpu())
    return torch.cat(out) if out else torch.zeros(0)


def nearest_real_distance(candidates: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance in [-1, 1] units from each candidate to its nearest real image: [N]."""
    pixels = candidates[0].numel()
    dist, _ = nearest_distances(
        candidates.reshape(len(candidates), -1).numpy(), real.reshape(len(real), -1).numpy()
    )
    # 0..255 Euclidean -> [-1, 1] units (x 2/255) -> per pixel RMS (/ sqrt(pixels)).
    return torch.from_numpy(dist * (2 / 255) / pixels**0.5).float()


def typical_neighbour_gap(images: torch.Tensor, labels: torch.Tensor, limit: int = 2000) -> float:
    """Median RMS distance from a real image to its nearest same-class neighbour."""
    gaps = []
    for c in labels.unique().tolist():
        x = images[labels == c][:limit]
        if len(x) < 2:
            continue
        f = x.flatten(1).float() / 127.5 - 1.0
        d = torch.cdist(f, f)
        d.fill_diagonal_(float("inf"))
        gaps.append(d.min(1).values / f.shape[1] ** 0.5)
    return float(torch.cat(gaps).median()) if gaps else 0.0


def select(
    candidates: torch.Tensor,
    probs: torch.Tensor,
    copy_distance: torch.Tensor,
    need: int,
    cfg: FilterConfig,
    copy_threshold: float,
    seed: int,
) -> tuple[torch.Tensor, dict]:
    """At most `need` passing candidates (random order), and the counts for the report."""
    label_ok = probs >= cfg.min_prob
    not_copy = copy_distance >= copy_threshold
    passed = torch.nonzero(label_ok & not_copy).squeeze(1)
    rng = torch.Generator().manual_seed(seed)
    passed = passed[torch.randperm(len(passed), generator=rng)]
    chosen = passed[:need]
    counts = {
        "candidates": len(candidates),
        "rejected_label": int((~label_ok).sum()),
        "rejected_copy": int((label_ok & ~not_copy).sum()),
        "passed": int(len(passed)),
        "kept": int(len(chosen)),
        "fallback_real": need - int(len(chosen)),
        "min_prob": cfg.min_prob,
        "copy_threshold": round(copy_threshold, 4),
    }
    return candidates[chosen], counts
