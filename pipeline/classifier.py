"""The SmallCNN classifier, trained for several (method, seed) members at once.

SmallCNN: Conv(16, 3x3)-ReLU-MaxPool, Conv(32, 3x3)-ReLU-MaxPool, Linear(64)-ReLU,
Dropout(0.3), Linear(num_classes). Convs are padded, so S x S inputs give 32 x S/4 x S/4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.augment import Augmentation, augment, augmentation_for
from pipeline.engine import make_adam, resolve_engine, run_steps, training_rng
from pipeline.seeding import seeded_init
from pipeline.stacked import StackedLinear, copy_member_, flatten_members, to_channels

DROPOUT = 0.3  # share of hidden units dropped per training step


class SmallCNN(nn.Module):
    """M stacked SmallCNNs: images [M, B, C, S, S] -> logits [M, B, num_classes]."""

    def __init__(self, members: int, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        m = members
        self.members = m
        self.dims = (channels, size, num_classes)  # per member, for single_member
        self.features = nn.Sequential(
            nn.Conv2d(m * channels, m * 16, 3, padding=1, groups=m),
            nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Conv2d(m * 16, m * 32, 3, padding=1, groups=m),
            nn.ReLU(True),
            nn.MaxPool2d(2),
        )
        self.hidden = StackedLinear(m, 32 * (size // 4) ** 2, 64)
        self.out = StackedLinear(m, 64, num_classes)
        # Dropout's random numbers (training only): nn.Dropout takes no generator.
        self.rng: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = flatten_members(self.features(to_channels(x)), self.members)  # [M, B, F]
        return self.out(self._dropout(F.relu(self.hidden(h))))

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        if self.rng is None:  # PyTorch's default generator: exactly nn.Dropout
            return F.dropout(h, DROPOUT, self.training)
        if not self.training:
            return h
        keep = torch.rand(h.shape, device=h.device, generator=self.rng) >= DROPOUT
        return h * keep / (1.0 - DROPOUT)

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d features before the last layer: [M, B, 64] (eval mode expected)."""
        h = flatten_members(self.features(to_channels(x)), self.members)
        return F.relu(self.hidden(h))


def single_member(model: SmallCNN, member: int) -> SmallCNN:
    """Member `member` of a stacked SmallCNN as a network of its own (eval mode, same device).

    Scoring or translating images with one member of a stack of W would otherwise cost W
    forward passes."""
    one = SmallCNN(1, *model.dims).to(next(model.parameters()).device)
    copy_member_(one, 0, model, member)
    return one.eval()


def init_members_alike_(model: SmallCNN, group_of: list[int]) -> None:
    """Give members of the same group identical initial weights (same seed -> same init).

    group_of[m] is the seed index of member m; the first member of each group is the source.
    Convs hold member m's weights in output-channel block m; stacked linears in row m.
    """
    first = {}
    for m, g in enumerate(group_of):
        first.setdefault(g, m)
    src = [first[g] for g in group_of]
    with torch.no_grad():
        for p in model.parameters():
            if isinstance(p, nn.Parameter) and p.dim() >= 1:
                blocks = p.reshape(model.members, -1)
                blocks.copy_(blocks[src].clone())


@dataclass
class ClassifierState:
    """Everything one classifier training step reads and writes; all of it on one device."""

    model: SmallCNN
    opt: torch.optim.Optimizer
    images: torch.Tensor  # uint8 [N, C, S, S], real and synthetic together
    labels: torch.Tensor  # int64 [N]
    pools: torch.Tensor  # int64 [M, Pmax]: member m trains on images[pools[m, :pool_sizes[m]]]
    pool_sizes: torch.Tensor  # int64 [M, 1]
    history: torch.Tensor  # float [steps, M]: training loss per member per step
    it: torch.Tensor  # int64 [1]: steps done, on the device
    batch: int
    augmentation: Augmentation | None = None  # applied to every training batch of every member
    rng: torch.Generator | None = None  # the steps' random numbers (None: PyTorch's default)

    def __post_init__(self) -> None:
        m = self.pools.shape[0]
        self.rows = torch.arange(m, device=self.pools.device).view(m, 1)  # [M, 1]


def classifier_step(st: ClassifierState) -> None:
    """One Adam step for all M members; run eagerly or captured in a CUDA graph alike."""
    m, b = st.pools.shape[0], st.batch
    # Sample with replacement from each member's own pool, on the device: idx [M, B].
    pick = (torch.rand(m, b, device=st.pools.device, generator=st.rng) * st.pool_sizes).long()
    idx = st.pools[st.rows, pick]
    x = st.images[idx].float() / 127.5 - 1.0  # [M, B, C, S, S] in [-1, 1]
    if st.augmentation is not None:  # each image of each member's batch transformed on its own
        x = augment(x.flatten(0, 1), st.augmentation, st.rng).view(x.shape)
    logits = st.model(x)  # [M, B, classes]
    loss = F.cross_entropy(logits.flatten(0, 1), st.labels[idx].flatten(), reduction="none")
    loss = loss.view(m, b).mean(1)  # [M]
    st.opt.zero_grad(set_to_none=True)
    # Mean per member, summed over members: each member's gradient is its own.
    loss.sum().backward()
    st.opt.step()
    st.history.index_copy_(0, st.it, loss.detach().unsqueeze(0))
    st.it += 1


def make_classifier_state(
    images: torch.Tensor,
    labels: torch.Tensor,
    pools: torch.Tensor,
    pool_sizes: torch.Tensor,
    seeds_of: list[int],
    num_classes: int,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
    engine: str,
    augmentation: Augmentation | None = None,
) -> ClassifierState:
    """M fresh SmallCNNs (members of one seed start alike), Adam and the loss history."""
    m = pools.shape[0]
    _, c, s, _ = images.shape
    dev = images.device
    with seeded_init(seed, dev):
        model = SmallCNN(m, c, s, num_classes)
    model = model.to(dev)
    model.rng = training_rng(dev)
    init_members_alike_(model, seeds_of)
    model.train()
    return ClassifierState(
        model=model,
        opt=make_adam(model.parameters(), lr, (0.9, 0.999), engine),
        images=images,
        labels=labels,
        pools=pools,
        pool_sizes=pool_sizes.to(dev).view(m, 1),
        history=torch.zeros(steps, m, device=dev),
        it=torch.zeros(1, dtype=torch.long, device=dev),
        batch=batch,
        augmentation=augmentation,
        rng=model.rng,
    )


def train_classifiers(
    images: torch.Tensor,
    labels: torch.Tensor,
    pools: torch.Tensor,
    pool_sizes: torch.Tensor,
    seeds_of: list[int],
    num_classes: int,
    steps: int,
    batch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    on_step=None,
    step_every: int = 50,
    engine: str = "auto",
    augmentation: Augmentation | None = None,
) -> SmallCNN:
    """Train M SmallCNNs, member m on images[pools[m, :pool_sizes[m]]].

    images: uint8 [N, C, S, S] on the training device (real and synthetic together)
    labels: int64 [N]
    pools:  int64 [M, Pmax] indices into images; pool_sizes: int64 [M]
    seeds_of: [M] seed index of each member; members sharing it start from the same weights
    engine: "auto" | "eager" | "graph" (pipeline/engine.py)
    augmentation: random transform of every training batch (pipeline/augment.py); None: none

    The returned model carries `loss_history`, float [steps, M] on the CPU.
    """
    engine = resolve_engine(engine, images.device)
    st = make_classifier_state(
        images,
        labels,
        pools,
        pool_sizes,
        seeds_of,
        num_classes,
        steps,
        batch,
        lr,
        seed,
        engine,
        augmentation,
    )
    run_steps(lambda: classifier_step(st), steps, engine, images.device, on_step, step_every)
    st.model.loss_history = st.history.cpu()
    return st.model


def train_on_pools(
    images: torch.Tensor,
    labels: torch.Tensor,
    pools: list,
    seeds_of: list[int],
    num_classes: int,
    cfg,
    device: torch.device,
    seed: int,
    progress=None,
) -> SmallCNN:
    """train_classifiers the job's way (cfg: a resolved RunConfig): member m on
    images[pools[m]] (int64 index arrays of any lengths), cfg.epochs passes over the largest
    pool. progress(fraction) every cfg.progress_every steps: a cancellation point (may raise)."""
    p_max = max(len(p) for p in pools)
    padded = torch.tensor(np.stack([np.pad(p, (0, p_max - len(p))) for p in pools]))
    steps = cfg.epochs * math.ceil(p_max / cfg.classifier_batch)
    return train_classifiers(
        images.to(device),
        labels.to(device),
        padded.to(device),
        torch.tensor([len(p) for p in pools], device=device),
        seeds_of,
        num_classes,
        steps=steps,
        batch=cfg.classifier_batch,
        lr=cfg.classifier_lr,
        seed=seed,
        on_step=None if progress is None else (lambda i: progress(i / steps)),
        step_every=cfg.progress_every,
        engine=cfg.engine,
        augmentation=augmentation_for(cfg.classifier_augment),
    )


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Predicted class of every image by every member: int64 [M, T] (CPU). No augmentation.

    Images per pass shrink with the member count (at most 8,192 member-images, ~0.4 GiB of
    activations at 28 px), so a stack of 20 or more members does not need gigabytes."""
    model.eval()
    batch = max(16, min(batch, 8192 // model.members))
    out = []
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch].float() / 127.5 - 1.0
        x = x.unsqueeze(0).expand(model.members, *x.shape)
        out.append(model(x).argmax(-1).cpu())
    return torch.cat(out, dim=1)
