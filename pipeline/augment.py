"""Classifier augmentation: random affine transforms (and flips) of whole training batches.

Every method's classifier (baseline, oversample, gan) is trained with the same policy, so the
three differ only in their training data and "oversample" is random oversampling + the same
augmentation, the control a practitioner would really use. Applied to training batches only,
never at prediction time.

`augment(x, aug)` is capturable in a CUDA graph (pipeline/engine.py): one random draw of
fixed shape from the default generator of x's device, no host sync, no per-image Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The policy names live in pipeline/config.py, which must not import torch (app/ imports it).
from pipeline.config import AUTO_POLICY, POLICIES, resolve_policy  # noqa: F401

# What "auto" means. Flips stay opt-in: a mirrored digit or letter is not the same class.


@dataclass(frozen=True)
class Augmentation:
    """Per image: rotation uniform in ±rotate_deg, scale uniform in [scale_min, scale_max],
    shift uniform in ±shift_px (each axis), mirrored left-right with probability 1/2 if flip."""

    rotate_deg: float = 15.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    shift_px: float = 2.0
    flip: bool = False

    def describe(self) -> str:
        """The policy as a phrase: 'random rotation ±15°, scale 0.9–1.1, shift ±2 px'."""
        parts = []
        if self.rotate_deg:
            parts.append(f"rotation ±{self.rotate_deg:g}°")
        if (self.scale_min, self.scale_max) != (1.0, 1.0):
            parts.append(f"scale {self.scale_min:g}–{self.scale_max:g}")
        if self.shift_px:
            parts.append(f"shift ±{self.shift_px:g} px")
        if self.flip:
            parts.append("horizontal flips")
        return "random " + ", ".join(parts) if parts else "no change"


def augmentation_for(policy: str) -> Augmentation | None:
    """The transform of a policy name (after resolving 'auto'); None for 'none'."""
    resolved = resolve_policy(policy)
    if resolved == "none":
        return None
    return Augmentation(flip=resolved == "affine+flip")


def augmentation_report(policy: str) -> dict:
    """The report's record of what every classifier was trained with."""
    resolved = resolve_policy(policy)
    aug = augmentation_for(policy)
    entry: dict = {"policy": policy, "resolved": resolved}
    if aug is None:
        entry["description"] = "every classifier was trained without augmentation"
        return entry
    entry.update(
        rotation_degrees=aug.rotate_deg,
        scale=[aug.scale_min, aug.scale_max],
        shift_px=aug.shift_px,
        horizontal_flip=aug.flip,
        description=f"every classifier was trained with {aug.describe()}",
    )
    return entry


def augment(x: torch.Tensor, aug: Augmentation, rng: torch.Generator | None = None) -> torch.Tensor:
    """A random transform of each image of x: float [N, C, S, S] in [-1, 1] -> same shape.

    Output values stay in [-1, 1] (bilinear interpolation of in-range values).
    """
    n, _, h, w = x.shape
    u = torch.rand(n, 5, device=x.device, dtype=x.dtype, generator=rng)  # capturable
    angle = (2 * u[:, 0] - 1) * math.radians(aug.rotate_deg)
    scale = aug.scale_min + (aug.scale_max - aug.scale_min) * u[:, 1]
    # affine_grid works in normalised coordinates, where the image spans [-1, 1]: with
    # align_corners=False one pixel is 2/size wide.
    tx = (2 * u[:, 2] - 1) * aug.shift_px * 2 / w
    ty = (2 * u[:, 3] - 1) * aug.shift_px * 2 / h
    # theta maps output coordinates to input ones, so it holds the inverse transform:
    # rotate by -angle and shrink by 1/scale (the content turns by angle and grows by scale).
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # A flip negates the input x coordinate; x -> -x maps pixel centres onto pixel centres
    # (align_corners=False), so a flip alone is an exact mirror.
    mirror = 1 - 2 * (u[:, 4] < 0.5).to(x.dtype) if aug.flip else torch.ones_like(cos)
    theta = torch.stack(
        [
            torch.stack([cos * mirror, sin, tx], dim=1),
            torch.stack([-sin * mirror, cos, ty], dim=1),
        ],
        dim=1,
    )  # [N, 2, 3]
    grid = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    # Pixels that come from outside the image copy the nearest edge pixel ("border"): on
    # digit-like data that is the background, whatever its colour (black on MNIST, white on
    # scanned pages), and on photos it is Keras' default fill. Zero padding would fill
    # with 0, mid-grey in [-1, 1], a frame no real image has; a black fill would be wrong on
    # light backgrounds; "reflection" mirrors strokes into the frame, a flip `affine` must not
    # do. The cost: a stroke touching the edge is extended by up to the shift (a few px).
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
