"""Synthetic images for the classes that need them: the one place a generator is chosen.

`synthesize(ds, need, cfg, device, progress)` returns, for every class index c in `need`,
need[c] generated images (uint8 [need[c], C, S, S], CPU) and the report's `gan` section.
Used by the pipeline (balance to a target) and by the imbalanced-learn sampler (any counts).
"""

from __future__ import annotations

import torch

from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset
from pipeline.gan import generate, to_unit, train_class_gans


def synthesize(
    ds: ImageDataset,
    need: dict[int, int],
    cfg: RunConfig,
    device: torch.device,
    progress,
) -> tuple[dict[int, torch.Tensor], dict]:
    """need[c] (>= 1) new images of class c for every c in need; cfg must be resolved.

    progress(stage, fraction) is called with stage "training_gan".
    """
    classes = [c for c, n in need.items() if n > 0]
    if not classes:
        return {}, {}
    return per_class_gans(ds, classes, [need[c] for c in classes], cfg, device, progress)


def per_class_gans(
    ds: ImageDataset,
    classes: list[int],
    need: list[int],
    cfg: RunConfig,
    device: torch.device,
    progress,
) -> tuple[dict[int, torch.Tensor], dict]:
    """One DCGAN per class, trained on that class's images only (all classes at once)."""
    counts = [int((ds.train_labels == c).sum()) for c in classes]
    n_max = max(counts)
    real = torch.full((len(classes), n_max, ds.channels, ds.image_size, ds.image_size), -1.0)
    for k, c in enumerate(classes):
        real[k, : counts[k]] = to_unit(ds.train_images[ds.train_labels == c])
    iters = cfg.gan_iterations
    result = train_class_gans(
        real.to(device),
        torch.tensor(counts, device=device),
        torch.tensor([n < cfg.diffaug_below for n in counts]),
        iterations=iters,
        batch=cfg.gan_batch,
        latent=cfg.gan_latent,
        lr=cfg.gan_lr,
        width=cfg.gan_width,
        seed=cfg.seed,
        on_step=lambda i: progress("training_gan", i / iters),
        step_every=cfg.progress_every,
        engine=cfg.engine,
    )
    images = generate(result.generator, need, cfg.gan_latent, cfg.gan_batch, cfg.seed + 1)
    info = {
        ds.class_names[c]: {
            "iterations": iters,
            "seconds": result.seconds,  # wall time of the joint training of all minority GANs
            "trained_jointly_with": len(classes),
            "train_images": counts[k],
            "generated": need[k],
            "diff_augment": counts[k] < cfg.diffaug_below,
            "loss_every": result.loss_every,
            "d_loss": [round(float(v), 4) for v in result.d_loss[:, k]],
            "g_loss": [round(float(v), 4) for v in result.g_loss[:, k]],
        }
        for k, c in enumerate(classes)
    }
    return dict(zip(classes, images, strict=True)), info
