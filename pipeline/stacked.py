"""Layers that hold K independent networks side by side ("members") in one module.

Member k's channels are the k-th block of K*C channels and every conv uses groups=K, so one
kernel launch trains K networks with no information flowing between them. Adam is elementwise,
so K stacked members train exactly as K separate models would. This is how the pipeline trains
one GAN per minority class, and one classifier per (method, seed), at once.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class StackedLinear(nn.Module):
    """K independent Linear layers: [K, B, fan_in] -> [K, B, fan_out]."""

    def __init__(self, members: int, fan_in: int, fan_out: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """[K, B, C, H, W] -> [B, K*C, H, W] (members as channel groups)."""
    k, b, c, h, w = x.shape
    return x.transpose(0, 1).reshape(b, k * c, h, w)


def from_channels(x: torch.Tensor, members: int) -> torch.Tensor:
    """[B, K*C, H, W] -> [K, B, C, H, W]."""
    b, kc, h, w = x.shape
    return x.reshape(b, members, kc // members, h, w).transpose(0, 1)


def flatten_members(x: torch.Tensor, members: int) -> torch.Tensor:
    """[B, K*C, H, W] -> [K, B, C*H*W]."""
    b = x.shape[0]
    return x.reshape(b, members, -1).transpose(0, 1)
