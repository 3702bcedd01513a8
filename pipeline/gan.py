"""Per-class DCGANs, all minority classes trained at once as stacked members.

Generator: z [K, B, Z] -> images [K, B, C, S, S] in [-1, 1]. Discriminator: the reverse, one
logit per image. Non-saturating loss, Adam 2e-4 (0.5, 0.999), DiffAugment (translation +
cutout, Zhao et al. 2020) on real and fake images for small classes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.stacked import StackedLinear, flatten_members, from_channels, to_channels


def upsampling_plan(size: int) -> tuple[int, int]:
    """(base side, number of 2x steps) with base * 2**steps == size, 2 <= steps <= 4."""
    if size % 4 or size < 8:
        raise ValueError(f"image size {size} must be a multiple of 4 and at least 8")
    steps = 2
    while steps < 4 and size % 2 ** (steps + 1) == 0 and size // 2 ** (steps + 1) >= 4:
        steps += 1
    return size // 2**steps, steps


def _widths(steps: int, base_width: int = 64) -> list[int]:
    """Feature widths from the coarsest level to the finest: e.g. steps=2 -> [128, 64]."""
    return [min(base_width * 2 ** (steps - 1 - i), 512) for i in range(steps)]


class Generator(nn.Module):
    def __init__(
        self, members: int, latent: int, channels: int, size: int, width: int = 64
    ) -> None:
        super().__init__()
        self.members, self.base = members, upsampling_plan(size)[0]
        widths = _widths(upsampling_plan(size)[1], width)
        k = members
        self.project = StackedLinear(k, latent, widths[0] * self.base**2)
        layers: list[nn.Module] = [nn.BatchNorm2d(k * widths[0]), nn.ReLU(True)]
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            layers += [
                nn.ConvTranspose2d(k * w_in, k * w_out, 4, 2, 1, bias=False, groups=k),
                nn.BatchNorm2d(k * w_out),
                nn.ReLU(True),
            ]
        layers += [nn.ConvTranspose2d(k * widths[-1], k * channels, 4, 2, 1, groups=k), nn.Tanh()]
        self.body = nn.Sequential(*layers)
        self.width0 = widths[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        k, b, _ = z.shape
        h = self.project(z)  # [K, B, W0*base*base]
        h = h.reshape(k, b, self.width0, self.base, self.base)
        return from_channels(self.body(to_channels(h)), self.members)


class Discriminator(nn.Module):
    def __init__(self, members: int, channels: int, size: int, width: int = 64) -> None:
        super().__init__()
        _, steps = upsampling_plan(size)
        widths = _widths(steps, width)[::-1]  # finest level first: e.g. [64, 128]
        k = members
        layers: list[nn.Module] = []
        w_in = channels
        for w_out in widths:
            layers += [nn.Conv2d(k * w_in, k * w_out, 4, 2, 1, groups=k), nn.LeakyReLU(0.2, True)]
            w_in = w_out
        self.body = nn.Sequential(*layers)
        self.members = members
        self.head = StackedLinear(k, widths[-1] * (size // 2**steps) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(to_channels(x))  # [B, K*W, base, base]
        return self.head(flatten_members(h, self.members)).squeeze(-1)  # [K, B]


def init_dcgan_(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), batch-norm scale N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def diff_augment(x: torch.Tensor, translate: float = 0.125, cutout: float = 0.5) -> torch.Tensor:
    """Random translation then cutout, per image; differentiable in x.

    x: [N, C, H, W] in [-1, 1]. Same policy for real and fake, so D cannot tell them apart by
    it. Uncovered and cut-out pixels are filled with -1 (black), not 0: a mid-gray fill is so
    visible on dark-background data (MNIST) that the generator learns to draw gray boxes.
    """
    n, _, h, w = x.shape
    dev = x.device
    # Translation: shift by up to translate*side pixels.
    sy, sx = int(h * translate + 0.5), int(w * translate + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=dev)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=dev)
    yy = torch.arange(h, device=dev).view(1, h, 1) - ty  # source row for each output row
    xx = torch.arange(w, device=dev).view(1, 1, w) - tx
    inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).unsqueeze(1)
    flat = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(n, 1, h * w)
    x = x.reshape(n, -1, h * w).gather(2, flat.expand(-1, x.shape[1], -1)).reshape(x.shape)
    x = torch.where(inside, x, -1.0)
    # Cutout: blank one square of half the side at a random centre.
    ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), device=dev)
    cx = torch.randint(0, w, (n, 1, 1), device=dev)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    hole = ((ys - cy).abs() <= ch // 2) & ((xs - cx).abs() <= cw // 2)
    return torch.where(hole.unsqueeze(1), -1.0, x)


@dataclass
class GanResult:
    generator: Generator
    iterations: int
    seconds: float
    # Losses sampled every `loss_every` iterations: [steps, K] each.
    d_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    g_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    loss_every: int = 1


def train_class_gans(
    real: torch.Tensor,
    counts: torch.Tensor,
    augment: torch.Tensor,
    iterations: int,
    batch: int = 64,
    latent: int = 100,
    lr: float = 2e-4,
    width: int = 64,
    seed: int = 0,
    on_step=None,
    step_every: int = 50,
) -> GanResult:
    """Train K class-conditional-by-construction GANs at once, one per stacked member.

    real:    float [K, Nmax, C, S, S] in [-1, 1], member k's images in real[k, :counts[k]]
    counts:  int64 [K], images per member (>= 1)
    augment: bool [K], DiffAugment on for member k
    on_step(i): called every step_every iterations (progress, cancellation).
    """
    k, _, c, s, _ = real.shape
    dev = real.device
    torch.manual_seed(seed)
    g = Generator(k, latent, c, s, width).to(dev)
    d = Discriminator(k, c, s, width).to(dev)
    init_dcgan_(g)
    init_dcgan_(d)
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    member = torch.arange(k, device=dev).view(k, 1)
    aug_mask = augment.to(dev).view(k, 1, 1, 1, 1)
    loss_every = max(1, iterations // 200)
    d_hist = torch.zeros(iterations // loss_every + 1, k, device=dev)
    g_hist = torch.zeros_like(d_hist)

    def augmented(x: torch.Tensor) -> torch.Tensor:  # [K, B, C, S, S]
        flat = x.reshape(k * batch, c, s, s)
        return torch.where(aug_mask, diff_augment(flat).reshape(x.shape), x)

    start = time.perf_counter()
    for i in range(iterations):
        # Sample a batch per member from its own images, on the device.
        idx = (torch.rand(k, batch, device=dev) * counts.view(k, 1)).long()
        x_real = real[member, idx]  # [K, B, C, S, S]
        z = torch.randn(k, batch, latent, device=dev)
        fake = g(z)
        # D step: real -> 1, fake -> 0. Losses are means over the batch, summed over members,
        # so each member's gradient is what it would be alone.
        loss_d = F.softplus(-d(augmented(x_real))).mean(1) + F.softplus(
            d(augmented(fake.detach()))
        ).mean(1)
        opt_d.zero_grad(set_to_none=True)
        loss_d.sum().backward()
        opt_d.step()
        # G step, non-saturating: maximise log D(G(z)).
        loss_g = F.softplus(-d(augmented(fake))).mean(1)
        opt_g.zero_grad(set_to_none=True)
        loss_g.sum().backward()
        opt_g.step()
        if i % loss_every == 0:
            d_hist[i // loss_every] = loss_d.detach()
            g_hist[i // loss_every] = loss_g.detach()
        if on_step is not None and (i + 1) % step_every == 0:
            on_step(i + 1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    n_hist = (iterations - 1) // loss_every + 1
    return GanResult(
        generator=g,
        iterations=iterations,
        seconds=time.perf_counter() - start,
        d_loss=d_hist[:n_hist].cpu(),
        g_loss=g_hist[:n_hist].cpu(),
        loss_every=loss_every,
    )


@torch.no_grad()
def generate(
    generator: Generator, counts: list[int], latent: int, batch: int, seed: int
) -> list[torch.Tensor]:
    """counts[k] (>= 1) images from member k, as uint8 [counts[k], C, S, S] CPU tensors.

    Batch-norm stays in training mode (batch statistics), as during training.
    """
    dev = next(generator.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(seed)
    k = len(counts)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(k)]
    for start in range(0, max(counts, default=0), batch):
        z = torch.randn(k, batch, latent, device=dev, generator=gen)
        imgs = to_uint8(generator(z))  # [K, B, C, S, S]
        for m in range(k):
            take = min(batch, counts[m] - start)
            if take > 0:
                chunks[m].append(imgs[m, :take].cpu())
    return [torch.cat(c) for c in chunks]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> 0..255 uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """0..255 uint8 -> [-1, 1] floats."""
    return x.float() / 127.5 - 1.0
