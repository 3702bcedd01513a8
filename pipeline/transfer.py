"""The "transfer" generator: how images of a class vary, learned from every class, applied to few.

A GAN trained on a minority class's k images can at best redraw those k images. This model
learns *variation* instead of images, from the classes that have many, and nothing in it is
tied to a class:

1. Pairs: every image of a well-stocked class (more than NEIGHBOURS images) and one of its
   nearest same-class neighbours (pixel distance).
2. Registration: for each pair (x, y), a coarse field f [3, g, g] (dx, dy, stroke thickness;
   g = S/4) is fitted so that vary(x, f) is as close to y as it can be. All pairs are fitted
   at once, as one batch of parameters, by Adam (run eagerly or in a CUDA graph).
3. The fitted fields' distribution (mean and covariance, in the field's pre-tanh space) is
   the model of "how an image of a class differs from its neighbours". It is pooled over all
   classes, as BAGAN pools covariance from the majority classes for a minority class too small
   to estimate its own.
4. A new image of a minority class: one of its real images, varied by a field drawn from that
   distribution, with the spread scaled by `spread_scale` (a registration explains only part
   of the difference between two images, so the fitted spread underestimates it; 2x measured
   best of 1, 1.5 and 2 on the seed protocol, docs/benchmarks.md).

A deformed 1 is still a 1, so the class is kept by construction; the filter (pipeline/
filtering.py) drops what the judge does not recognise anyway. Shapes:

    vary(x [B, C, S, S] in [-1, 1], field [B, 3, g, g] in [-1, 1]) -> [B, C, S, S] in [-1, 1]

Adversarial versions of this (a generator of fields judged by a discriminator of image pairs,
or of single images with a diversity term) were tried first and lost to plain oversampling;
docs/benchmarks.md has the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.engine import make_adam, resolve_engine, run_steps

NEIGHBOURS = 5  # pairs: an image and one of its 5 nearest same-class neighbours
MAX_PAIR_POOL = 4000  # images per class searched for neighbours (the search is quadratic)


@dataclass(frozen=True)
class TransferConfig:
    max_shift: float = 3.0  # px at the working size: the largest displacement a field can make
    pairs: int = 2048  # neighbour pairs registered
    steps: int = 300  # Adam steps of the registration (all pairs at once)
    lr: float = 0.05  # Adam learning rate of the field parameters
    spread_scale: float = 2.0  # drawn fields' spread, relative to the fitted one


def vary(x: torch.Tensor, field: torch.Tensor, max_shift: float) -> torch.Tensor:
    """Warp x by the field's (dx, dy), then thicken (t > 0) or thin (t < 0) its strokes.

    x: [B, C, S, S] in [-1, 1]; field: [B, 3, g, g] in [-1, 1]. The coarse field is
    upsampled bilinearly, so the warp is smooth. Border padding: pixels pulled in from outside
    repeat the edge (black on digits, the background on photos), never a grey frame.
    Thickness blends towards a 3x3 max-pool (dilation) or min-pool (erosion): bright strokes
    on a dark ground grow or shrink by up to a pixel.
    """
    b, _, s, _ = x.shape
    up = F.interpolate(field, size=(s, s), mode="bilinear", align_corners=False)
    shift = up[:, :2].permute(0, 2, 3, 1) * (2.0 * max_shift / s)  # px -> grid units
    eye = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(b, 2, 3)
    base = F.affine_grid(eye, list(x.shape), align_corners=False)  # [B, S, S, 2]
    warped = F.grid_sample(x, base + shift, padding_mode="border", align_corners=False)
    t = up[:, 2:3]
    dilated = F.max_pool2d(warped, 3, 1, 1)
    eroded = -F.max_pool2d(-warped, 3, 1, 1)
    return warped + t.clamp(min=0) * (dilated - warped) + (-t).clamp(min=0) * (eroded - warped)


def neighbour_pairs(
    images: torch.Tensor, labels: torch.Tensor, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) int64 [count] each: b[i] is one of a[i]'s NEIGHBOURS nearest same-class images.

    Only classes with more than NEIGHBOURS images give pairs; each class is searched over at
    most MAX_PAIR_POOL of its images (a random subset). images: uint8 [N, C, S, S], CPU.
    """
    rng = torch.Generator().manual_seed(seed)
    anchors, neighbours = [], []
    flat = images.flatten(1).float()
    for c in labels.unique().tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        if len(idx) <= NEIGHBOURS:
            continue
        idx = idx[torch.randperm(len(idx), generator=rng)[:MAX_PAIR_POOL]]
        d = torch.cdist(flat[idx], flat[idx])
        d.fill_diagonal_(float("inf"))
        anchors.append(idx)
        neighbours.append(idx[d.topk(NEIGHBOURS, largest=False).indices])  # [n, NEIGHBOURS]
    if not anchors:
        raise ValueError(f"the transfer generator needs a class with more than {NEIGHBOURS} images")
    a, nb = torch.cat(anchors), torch.cat(neighbours)
    pick = torch.randint(0, len(a), (count,), generator=rng)
    return a[pick], nb[pick, torch.randint(0, NEIGHBOURS, (count,), generator=rng)]


@dataclass
class RegistrationState:
    """What one registration step reads and writes; all of it on one device."""

    raw: torch.Tensor  # float [P, 3, g, g], requires grad: pre-tanh field of each pair
    opt: torch.optim.Optimizer
    x: torch.Tensor  # float [P, C, S, S] in [-1, 1]: anchors
    y: torch.Tensor  # float [P, C, S, S]: their neighbours
    history: torch.Tensor  # float [steps]: mean squared error per step
    it: torch.Tensor  # int64 [1], on the device
    max_shift: float


def registration_step(st: RegistrationState) -> None:
    """One Adam step on every pair's field; capturable (no host sync, fixed shapes)."""
    loss = (vary(st.x, torch.tanh(st.raw), st.max_shift) - st.y).pow(2).mean()
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    st.opt.step()
    st.history.index_copy_(0, st.it, loss.detach().view(1))
    st.it += 1


@dataclass
class FieldModel:
    """A Gaussian over pre-tanh fields: raw = mean + scale * chol @ e, e ~ N(0, I)."""

    mean: torch.Tensor  # [3 * g * g]
    chol: torch.Tensor  # [3g², 3g²] lower-triangular, spread_scale included
    grid: int  # g
    max_shift: float
    seconds: float  # fitting time (pairs search + registration)
    pairs: int
    loss_start: float  # mean squared pixel error of the pairs before registration
    loss_end: float  # ... and after
    loss_curve: list[float]  # sampled registration loss

    def sample(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """n fields [n, 3, g, g] in [-1, 1]."""
        e = torch.randn(n, self.mean.numel(), device=self.mean.device, generator=rng)
        return torch.tanh(self.mean + e @ self.chol.T).view(n, 3, self.grid, self.grid)


def fit_field_model(
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TransferConfig,
    seed: int = 0,
    on_step=None,
    step_every: int = 50,
    engine: str = "auto",
) -> FieldModel:
    """Register neighbour pairs from every class and fit the fields' distribution.

    images: uint8 [N, C, S, S] on the fitting device; labels: int64 [N].
    """
    everything = torch.arange(len(labels))
    return fit_field_models(images, labels, [everything], cfg, seed, on_step, step_every, engine)[0]


def fit_field_models(
    images: torch.Tensor,
    labels: torch.Tensor,
    groups: list[torch.Tensor],
    cfg: TransferConfig,
    seed: int = 0,
    on_step=None,
    step_every: int = 50,
    engine: str = "auto",
) -> list[FieldModel]:
    """One field model per group of images (indices into images), all registered at once.

    Pairs never cross groups, and each model's distribution is fitted on its own group's
    fields, so the models are what fit_field_model would give each group alone; registering
    every group's pairs in one batch costs about one fit on the GPU (the job and its proxy
    worlds fit theirs together).
    """
    dev = images.device
    engine = resolve_engine(engine, dev)
    start = time.perf_counter()
    cpu_images, cpu_labels = images.cpu(), labels.cpu()
    a_all, b_all = [], []
    for g, idx in enumerate(groups):
        idx = torch.as_tensor(idx, dtype=torch.long).cpu()
        a, b = neighbour_pairs(cpu_images[idx], cpu_labels[idx], cfg.pairs, seed + g)
        a_all.append(idx[a])
        b_all.append(idx[b])
    a, b = torch.cat(a_all).to(dev), torch.cat(b_all).to(dev)
    grid = max(images.shape[-1] // 4, 2)
    raw = torch.zeros(len(a), 3, grid, grid, device=dev, requires_grad=True)
    st = RegistrationState(
        raw=raw,
        opt=make_adam([raw], cfg.lr, (0.9, 0.999), engine),
        x=images[a].float() / 127.5 - 1.0,
        y=images[b].float() / 127.5 - 1.0,
        history=torch.zeros(cfg.steps, device=dev),
        it=torch.zeros(1, dtype=torch.long, device=dev),
        max_shift=cfg.max_shift,
    )
    loss_start = float((st.x - st.y).pow(2).mean())
    run_steps(lambda: registration_step(st), cfg.steps, engine, dev, on_step, step_every)
    history = st.history.cpu()
    every = max(1, cfg.steps // 100)
    seconds = time.perf_counter() - start
    models = []
    for g in range(len(groups)):
        fields = raw.detach()[g * cfg.pairs : (g + 1) * cfg.pairs].flatten(1)  # [P, 3g²]
        mean = fields.mean(0)
        cov = torch.cov((fields - mean).T) + 1e-4 * torch.eye(fields.shape[1], device=dev)
        models.append(
            FieldModel(
                mean=mean,
                chol=torch.linalg.cholesky(cov) * cfg.spread_scale,
                grid=grid,
                max_shift=cfg.max_shift,
                seconds=seconds,
                pairs=cfg.pairs,
                loss_start=loss_start,
                loss_end=float(history[-1]),
                loss_curve=[round(float(v), 5) for v in history[::every]],
            )
        )
    return models


@torch.no_grad()
def generate_variations(
    model: FieldModel, sources: torch.Tensor, count: int, seed: int, batch: int = 1024
) -> torch.Tensor:
    """count variations of the source images: uint8 [count, C, S, S] on the CPU.

    sources: uint8 [k, C, S, S] on the model's device. Each source is varied about count / k
    times (a shuffled round robin), so every real image gets its share.
    """
    dev = sources.device
    rng = torch.Generator(device=dev).manual_seed(seed)
    # Sources in a random order, repeated: with count < k the varied sources are a random
    # subset, not the first ones.
    first = torch.randperm(len(sources), generator=rng, device=dev)
    order = first[torch.arange(count, device=dev) % len(sources)]
    order = order[torch.randperm(count, generator=rng, device=dev)]
    out = []
    for start in range(0, count, batch):
        idx = order[start : start + batch]
        x = sources[idx].float() / 127.5 - 1.0
        y = vary(x, model.sample(len(idx), rng), model.max_shift)
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out) if out else sources[:0].cpu()
