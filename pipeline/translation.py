"""The "translation" generator: images of the big classes translated into a minority class.

M2m (Kim, Jeong & Shin, CVPR 2020): take an image of another class and move it, by a few
gradient steps on a classifier trained on the real data, until that classifier gives it the
minority class; the variation of the big classes is carried over into the small one. As in
M2m's code (alinlab/M2m, `generation`): start from the source plus a little L2 noise, 10
normalised-gradient steps on cross-entropy(target) + lam * logit(source class), accept only
translations the classifier puts in the target class with probability >= gamma (M2m: 0.9 to
0.99). A translation that fails falls back to a real image of the class (the caller's filter
and share do that). Source classes are drawn in proportion to their size, as M2m's sampling
favours the big classes.

Shapes: sources uint8 [N, C, S, S]; the classifier is a single-member SmallCNN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.classifier import SmallCNN
from pipeline.engine import capture_lock
from pipeline.gan import to_uint8, to_unit

STEPS = 10  # gradient steps per translation (M2m: attack_iter 10)
STEP_SIZE = 0.1  # L2 length of one step, per sqrt(pixel) on the [-1, 1] scale
START_NOISE = 0.05  # L2 length of the random start, per sqrt(pixel)
SOURCE_WEIGHT = 0.5  # lam: push away from the source class (M2m: 0.5)


def translate(
    judge: SmallCNN,
    images: torch.Tensor,
    labels: torch.Tensor,
    pool: torch.Tensor,
    target: int,
    count: int,
    seed: int,
    batch: int = 512,
) -> torch.Tensor:
    """count translations into class `target` of images drawn from pool: uint8 [count, C, S, S].

    judge: a single-member SmallCNN (classifier.single_member) trained on the pool's world.
    images: uint8 [N, C, S, S] on the judge's device; labels int64 [N] there too; pool: int64
    indices of the images this world may use (its training set). Sources are drawn from the
    pool's other classes, uniformly over images (so big classes give most of them).
    """
    dev = images.device
    rng = torch.Generator(device=dev).manual_seed(seed)
    others = pool[labels[pool] != target]
    if len(others) == 0 or count == 0:
        return images[:0].cpu()
    judge.eval()
    out = []
    for start in range(0, count, batch):
        n = min(batch, count - start)
        src = others[torch.randint(len(others), (n,), generator=rng, device=dev)]
        out.append(_translate_batch(judge, images[src], labels[src], target, rng))
    return torch.cat(out)


def _translate_batch(
    judge: SmallCNN,
    x0: torch.Tensor,
    source: torch.Tensor,
    target: int,
    rng: torch.Generator,
) -> torch.Tensor:
    x = to_unit(x0)  # [B, C, S, S]
    scale = x[0].numel() ** 0.5  # L2 lengths are per sqrt(pixel): the same at any image size
    x = x + _unit_l2(torch.randn(x.shape, generator=rng, device=x.device)) * START_NOISE * scale
    x = x.clamp(-1, 1)
    goal = torch.full((len(x),), target, device=x.device)
    source_hot = F.one_hot(source, judge.dims[2]).float()  # [B, classes]
    # No graph capture may run while this thread runs backward passes eagerly: PyTorch's
    # autograd engine runs every thread's backward on one device thread, and under load a
    # translation's kernels were caught in another job's capture (a scatter with a freed
    # index tensor, "capturing stream has unjoined work"). A translation takes ~10 ms.
    with capture_lock():
        for _ in range(STEPS):
            x = x.detach().requires_grad_(True)
            logits = judge(x.unsqueeze(0))[0]  # [B, classes]
            push_away = (logits * source_hot).sum(1).mean()  # the source class's logit
            loss = F.cross_entropy(logits, goal) + SOURCE_WEIGHT * push_away
            (grad,) = torch.autograd.grad(loss, [x])
            x = (x - _unit_l2(grad) * STEP_SIZE * scale).clamp(-1, 1)
        x = x.detach()
    return to_uint8(x).cpu()


def _unit_l2(v: torch.Tensor) -> torch.Tensor:
    """Each row of v scaled to L2 length 1 (zero rows stay zero)."""
    norm = v.flatten(1).norm(dim=1).clamp_min(1e-12)
    return v / norm.view(-1, *([1] * (v.dim() - 1)))
