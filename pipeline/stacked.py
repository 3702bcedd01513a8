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


def member_tensors(module: nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers that hold per-member blocks (every one with a leading dim)."""
    return [t for t in [*module.parameters(), *module.buffers()] if t.dim() >= 1]


@torch.no_grad()
def copy_member_(dst: nn.Module, dst_k: int, src: nn.Module, src_k: int) -> None:
    """Copy member src_k of `src` into member dst_k of `dst` (same architecture, any K).

    Every tensor of a stacked module is K equal member blocks along its first dimension
    (conv output or input channels, batch-norm channels, stacked-linear rows), so
    t.reshape(K, -1)[k] is member k's block.
    """
    k_dst, k_src = dst.members, src.members
    for d, s in zip(member_tensors(dst), member_tensors(src), strict=True):
        d.reshape(k_dst, -1)[dst_k].copy_(s.reshape(k_src, -1)[src_k])
