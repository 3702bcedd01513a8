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

from pipeline.engine import (
    concurrent,
    make_adam,
    resolve_engine,
    run_steps,
    training_rng,
    wait_for,
)
from pipeline.seeding import seeded_init
from pipeline.stacked import (
    StackedLinear,
    copy_member_,
    flatten_members,
    from_channels,
    to_channels,
)

# How K class GANs train at once (see train_class_gans' `layout`); "auto": streams with the
# graph engine when K > 1 (measured faster: 3.0 vs 5.1 ms per iteration at K = 9 on an
# H200, docs/benchmarks.md), stacked otherwise. The benchmark overrides it.
MEMBER_LAYOUT = "auto"


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
        self.members, self.base, self.width = members, upsampling_plan(size)[0], width
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
        self.members, self.width = members, width
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


def diff_augment(
    x: torch.Tensor,
    translate: float = 0.125,
    cutout: float = 0.5,
    rng: torch.Generator | None = None,
) -> torch.Tensor:
    """Random translation then cutout, per image; differentiable in x.

    x: [N, C, H, W] in [-1, 1]. Same policy for real and fake, so D cannot tell them apart by
    it. Uncovered and cut-out pixels are filled with -1 (black), not 0: a mid-gray fill is so
    visible on dark-background data (MNIST) that the generator learns to draw gray boxes.
    """
    n, _, h, w = x.shape
    dev = x.device
    # Translation: shift by up to translate*side pixels.
    sy, sx = int(h * translate + 0.5), int(w * translate + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), device=dev, generator=rng)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), device=dev, generator=rng)
    yy = torch.arange(h, device=dev).view(1, h, 1) - ty  # source row for each output row
    xx = torch.arange(w, device=dev).view(1, 1, w) - tx
    inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)).unsqueeze(1)
    flat = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(n, 1, h * w)
    x = x.reshape(n, -1, h * w).gather(2, flat.expand(-1, x.shape[1], -1)).reshape(x.shape)
    x = torch.where(inside, x, -1.0)
    # Cutout: blank one square of half the side at a random centre.
    ch, cw = int(h * cutout + 0.5), int(w * cutout + 0.5)
    cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=rng)
    cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=rng)
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
    engine: str = "eager"


@dataclass
class GanState:
    """Everything one GAN training iteration reads and writes; all of it on one device.

    Tensors here live for the whole training run, which is what lets `gan_step` be captured
    once in a CUDA graph and replayed (see pipeline/engine.py).
    """

    g: Generator
    d: Discriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    real: torch.Tensor  # float [K, Nmax, C, S, S] in [-1, 1]
    counts: torch.Tensor  # int64 [K, 1]: images of member k are real[k, :counts[k]]
    aug_mask: torch.Tensor  # bool [K, 1, 1, 1, 1]: DiffAugment on for member k
    history: torch.Tensor  # float [iterations, 2, K]: (D loss, G loss) per iteration
    it: torch.Tensor  # int64 [1]: iterations done, kept on the device (no host sync)
    batch: int
    latent: int
    lr: float
    rng: torch.Generator | None = None  # the steps' random numbers (None: PyTorch's default)

    def __post_init__(self) -> None:
        k = self.real.shape[0]
        self.member = torch.arange(k, device=self.real.device).view(k, 1)  # [K, 1]
        self.g_params = list(self.g.parameters())


def augmented(
    x: torch.Tensor, aug_mask: torch.Tensor, rng: torch.Generator | None = None
) -> torch.Tensor:
    """DiffAugment where aug_mask [K, 1, 1, 1, 1] says so. x: [K, N, C, S, S].

    Augments every member and then selects, so shapes never depend on the data (needed for
    graph capture); the cost is small next to the convolutions.
    """
    k, n, c, s, _ = x.shape
    aug = diff_augment(x.reshape(k * n, c, s, s), rng=rng).reshape(x.shape)
    return torch.where(aug_mask, aug, x)


def gan_step(st: GanState) -> None:
    """One D update then one G update for all K members; losses go to st.history[st.it].

    The same function runs eagerly and inside a CUDA graph: batch indices, noise and
    augmentation are drawn on the device, nothing is read back to the host.
    """
    k, b = st.real.shape[0], st.batch
    # A batch per member from its own images: idx [K, B] in 0..counts[k]-1.
    dev = st.real.device
    idx = (torch.rand(k, b, device=dev, generator=st.rng) * st.counts).long()
    x_real = st.real[st.member, idx]  # [K, B, C, S, S]
    z = torch.randn(k, b, st.latent, device=dev, generator=st.rng)  # [K, B, Z]
    fake = st.g(z)  # [K, B, C, S, S]

    # D step: real -> 1, fake -> 0. Real and fake go through D as one batch of 2B (D has no
    # batch norm, so this is the same function as two passes, at half the kernel launches).
    both = torch.cat([x_real, fake.detach()], dim=1)
    logits = st.d(augmented(both, st.aug_mask, st.rng))  # [K, 2B]
    # Means over the batch, summed over members: each member's gradient is its own.
    loss_d = F.softplus(-logits[:, :b]).mean(1) + F.softplus(logits[:, b:]).mean(1)  # [K]
    st.opt_d.zero_grad(set_to_none=True)
    loss_d.sum().backward()
    st.opt_d.step()

    # G step, non-saturating: maximise log D(G(z)) against the updated D. Gradients are
    # taken for G's parameters only: D's would be discarded by the next D step anyway.
    loss_g = F.softplus(-st.d(augmented(fake, st.aug_mask, st.rng))).mean(1)  # [K]
    st.opt_g.zero_grad(set_to_none=True)
    loss_g.sum().backward(inputs=st.g_params)
    st.opt_g.step()

    # Record the losses at row `it` of the history without reading `it` on the host.
    losses = torch.stack([loss_d.detach(), loss_g.detach()]).unsqueeze(0)  # [1, 2, K]
    st.history.index_copy_(0, st.it, losses)
    st.it += 1


def make_gan_state(
    real: torch.Tensor,
    counts: torch.Tensor,
    augment: torch.Tensor,
    iterations: int,
    batch: int,
    latent: int,
    lr: float,
    width: int,
    seed: int,
    engine: str,
) -> GanState:
    """Fresh DCGAN-initialised G and D for K members, their optimisers and the loss history."""
    k, _, c, s, _ = real.shape
    dev = real.device
    with seeded_init(seed, dev):
        g = Generator(k, latent, c, s, width)
        d = Discriminator(k, c, s, width)
        init_dcgan_(g)
        init_dcgan_(d)
    g, d = g.to(dev), d.to(dev)
    return GanState(
        g=g,
        d=d,
        opt_g=make_adam(g.parameters(), lr, (0.5, 0.999), engine),
        opt_d=make_adam(d.parameters(), lr, (0.5, 0.999), engine),
        real=real,
        counts=counts.to(dev).view(k, 1),
        aug_mask=augment.to(dev).view(k, 1, 1, 1, 1),
        history=torch.zeros(iterations, 2, k, device=dev),
        it=torch.zeros(1, dtype=torch.long, device=dev),
        batch=batch,
        latent=latent,
        lr=lr,
        rng=training_rng(dev),
    )


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
    engine: str = "auto",
    layout: str = "auto",
) -> GanResult:
    """Train K class-conditional-by-construction GANs at once, one per stacked member.

    real:    float [K, Nmax, C, S, S] in [-1, 1], member k's images in real[k, :counts[k]]
    counts:  int64 [K], images per member (>= 1)
    augment: bool [K], DiffAugment on for member k
    on_step(i): called every step_every iterations (progress, cancellation).
    engine:  "auto" | "eager" | "graph" (pipeline/engine.py)
    layout:  "stacked" (one network with K members: grouped convs) or "streams" (K
             single-member networks stepped concurrently on K CUDA streams; CUDA and K > 1
             only); "auto" = MEMBER_LAYOUT, which by default picks streams for the graph
             engine and stacked for the eager one (the plain reference).
    """
    dev = real.device
    engine = resolve_engine(engine, dev)
    layout = MEMBER_LAYOUT if layout == "auto" else layout
    k = real.shape[0]
    if layout == "auto":
        layout = "streams" if engine == "graph" and k > 1 else "stacked"
    st = make_gan_state(real, counts, augment, iterations, batch, latent, lr, width, seed, engine)
    start = time.perf_counter()
    if layout == "streams" and k > 1 and dev.type == "cuda":
        history = _train_on_streams(st, iterations, engine, on_step, step_every)
    else:
        run_steps(lambda: gan_step(st), iterations, engine, dev, on_step, step_every)
        history = st.history
    if dev.type == "cuda":  # this job's stream only: other jobs may share the GPU
        wait_for(torch.cuda.current_stream(dev))
    seconds = time.perf_counter() - start
    loss_every = max(1, iterations // 200)
    hist = history[::loss_every].cpu()  # [ceil(iterations / loss_every), 2, K]
    return GanResult(
        generator=st.g,
        iterations=iterations,
        seconds=seconds,
        d_loss=hist[:, 0],
        g_loss=hist[:, 1],
        loss_every=loss_every,
        engine=engine,
    )


def _train_on_streams(
    st: GanState, iterations: int, engine: str, on_step, step_every: int
) -> torch.Tensor:
    """The "streams" layout: K single-member GANs, one CUDA stream each, stepped together.

    Starts from the stacked state's initial weights and copies the trained weights back into
    st.g / st.d, so callers see the same stacked generator. Same maths as the stacked layout
    (members are independent either way); only the random draws differ.
    Returns the loss history, [iterations, 2, K].
    """
    dev = st.real.device
    members = split_members(st, iterations, engine)
    step = concurrent([lambda ms=ms: gan_step(ms) for ms in members], dev)
    run_steps(step, iterations, engine, dev, on_step, step_every)
    for m, ms in enumerate(members):
        copy_member_(st.g, m, ms.g, 0)
        copy_member_(st.d, m, ms.d, 0)
    return torch.cat([ms.history for ms in members], dim=2)


def split_members(st: GanState, iterations: int, engine: str) -> list[GanState]:
    """K single-member training states holding member k's weights and data of `st`."""
    c, s = st.real.shape[2], st.real.shape[3]
    dev = st.real.device
    members = []
    for m in range(st.real.shape[0]):
        with seeded_init(m):  # overwritten below; the lock keeps other jobs' inits intact
            g = Generator(1, st.latent, c, s, width=st.g.width)
            d = Discriminator(1, c, s, width=st.d.width)
        g, d = g.to(dev), d.to(dev)
        copy_member_(g, 0, st.g, m)
        copy_member_(d, 0, st.d, m)
        members.append(
            GanState(
                g=g,
                d=d,
                opt_g=make_adam(g.parameters(), st.lr, (0.5, 0.999), engine),
                opt_d=make_adam(d.parameters(), st.lr, (0.5, 0.999), engine),
                real=st.real[m : m + 1],
                counts=st.counts[m : m + 1],
                aug_mask=st.aug_mask[m : m + 1],
                history=torch.zeros(iterations, 2, 1, device=dev),
                it=torch.zeros(1, dtype=torch.long, device=dev),
                batch=st.batch,
                latent=st.latent,
                lr=st.lr,
                rng=st.rng,
            )
        )
    return members


@torch.no_grad()
def generate(
    generator: Generator, counts: list[int], latent: int, batch: int, seed: int
) -> list[torch.Tensor]:
    """counts[k] (>= 1) images from member k, as uint8 [counts[k], C, S, S] CPU tensors.

    Batch-norm stays in training mode (batch statistics), as during training.
    """
    dev = next(generator.parameters()).device
    rng = torch.Generator(device=dev).manual_seed(seed)
    k = len(counts)
    chunks: list[list[torch.Tensor]] = [[] for _ in range(k)]
    for start in range(0, max(counts, default=0), batch):
        z = torch.randn(k, batch, latent, device=dev, generator=rng)
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
