"""The SmallCNN classifier, trained for several (method, seed) members at once.

SmallCNN: Conv(16, 3x3)-ReLU-MaxPool, Conv(32, 3x3)-ReLU-MaxPool, Linear(64)-ReLU,
Dropout(0.3), Linear(num_classes). Convs are padded, so S x S inputs give 32 x S/4 x S/4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.stacked import StackedLinear, flatten_members, to_channels


class SmallCNN(nn.Module):
    """M stacked SmallCNNs: images [M, B, C, S, S] -> logits [M, B, num_classes]."""

    def __init__(self, members: int, channels: int, size: int, num_classes: int) -> None:
        super().__init__()
        m = members
        self.members = m
        self.features = nn.Sequential(
            nn.Conv2d(m * channels, m * 16, 3, padding=1, groups=m),
            nn.ReLU(True),
            nn.MaxPool2d(2),
            nn.Conv2d(m * 16, m * 32, 3, padding=1, groups=m),
            nn.ReLU(True),
            nn.MaxPool2d(2),
        )
        self.hidden = StackedLinear(m, 32 * (size // 4) ** 2, 64)
        self.dropout = nn.Dropout(0.3)
        self.out = StackedLinear(m, 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = flatten_members(self.features(to_channels(x)), self.members)  # [M, B, F]
        return self.out(self.dropout(F.relu(self.hidden(h))))

    def penultimate(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-d features before the last layer: [M, B, 64] (eval mode expected)."""
        h = flatten_members(self.features(to_channels(x)), self.members)
        return F.relu(self.hidden(h))


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
) -> SmallCNN:
    """Train M SmallCNNs, member m on images[pools[m, :pool_sizes[m]]].

    images: uint8 [N, C, S, S] on the training device (real and synthetic together)
    labels: int64 [N]
    pools:  int64 [M, Pmax] indices into images; pool_sizes: int64 [M]
    seeds_of: [M] seed index of each member; members sharing it start from the same weights
    """
    m = pools.shape[0]
    _, c, s, _ = images.shape
    dev = images.device
    torch.manual_seed(seed)
    model = SmallCNN(m, c, s, num_classes).to(dev)
    init_members_alike_(model, seeds_of)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rows = torch.arange(m, device=dev).view(m, 1)
    model.train()
    for i in range(steps):
        # Sample with replacement from each member's own pool, on the device.
        pick = (torch.rand(m, batch, device=dev) * pool_sizes.view(m, 1)).long()
        idx = pools[rows, pick]  # [M, B]
        x = images[idx].float() / 127.5 - 1.0  # [M, B, C, S, S]
        logits = model(x)
        loss = F.cross_entropy(
            logits.reshape(m * batch, -1), labels[idx].reshape(-1), reduction="none"
        )
        opt.zero_grad(set_to_none=True)
        # Mean per member, summed over members: each member's gradient is its own.
        loss.view(m, batch).mean(1).sum().backward()
        opt.step()
        if on_step is not None and (i + 1) % step_every == 0:
            on_step(i + 1)
    return model


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Predicted class of every image by every member: int64 [M, T] (CPU)."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch].float() / 127.5 - 1.0
        x = x.unsqueeze(0).expand(model.members, *x.shape)
        out.append(model(x).argmax(-1).cpu())
    return torch.cat(out, dim=1)
