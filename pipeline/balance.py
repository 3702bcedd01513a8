"""Synthetic images for the classes that need them: the one place a generator is chosen.

`synthesize(ds, need, cfg, device, progress)` returns, for every class index c in `need`,
need[c] generated images (uint8 [need[c], C, S, S], CPU) and the report's `gan` section.
Used by the pipeline (balance to a target) and by the imbalanced-learn sampler (any counts).

Per class, the generator is "per-class" (a DCGAN on that class's images, pipeline/gan.py) or
"transfer" (variation learned from every class, pipeline/transfer.py); cfg.generator "auto"
picks transfer for classes under cfg.transfer_below images when another class has enough
images to learn from. Either way FilterConfig.factor times the images needed are generated
and pipeline/filtering.py keeps exactly the number needed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from pipeline.augment import augmentation_for
from pipeline.classifier import SmallCNN, train_classifiers
from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset
from pipeline.filtering import (
    FilterConfig,
    judge_probabilities,
    nearest_real_distance,
    select,
    typical_neighbour_gap,
)
from pipeline.gan import generate, to_unit, train_class_gans
from pipeline.transfer import NEIGHBOURS, TransferConfig, fit_field_model, generate_variations

FILTER = FilterConfig()


def synthesize(
    ds: ImageDataset,
    need: dict[int, int],
    cfg: RunConfig,
    device: torch.device,
    progress,
) -> tuple[dict[int, torch.Tensor], dict]:
    """need[c] new images of class c for every c in need with need[c] >= 1; cfg resolved.

    progress(stage, fraction) is called with stage "training_gan".
    """
    classes = [c for c, n in need.items() if n > 0]
    if not classes:
        return {}, {}
    choice = {c: choose_generator(ds, c, cfg) for c in classes}
    transfer = [c for c in classes if choice[c][0] == "transfer"]
    per_class = [c for c in classes if choice[c][0] == "per-class"]
    # Progress: each group's share of the stage is its share of the classes.
    share = len(transfer) / len(classes)
    candidates: dict[int, torch.Tensor] = {}
    info: dict[str, dict] = {}
    if transfer:
        cand, group_info = transfer_candidates(
            ds, transfer, need, cfg, device, lambda f: progress("training_gan", f * share)
        )
        candidates.update(cand)
        info.update(group_info)
    if per_class:
        cand, group_info = per_class_candidates(
            ds,
            per_class,
            need,
            cfg,
            device,
            lambda f: progress("training_gan", share + f * (1 - share)),
        )
        candidates.update(cand)
        info.update(group_info)
    judge = train_judge(ds, cfg, device)
    gap = typical_neighbour_gap(ds.train_images, ds.train_labels)
    synthetic = {}
    for c in classes:
        real = ds.train_images[ds.train_labels == c]
        probs = judge_probabilities(judge, candidates[c], c)
        dist = nearest_real_distance(candidates[c], real)
        synthetic[c], counts = select(
            candidates[c], probs, dist, need[c], FILTER, FILTER.copy_fraction * gap, cfg.seed + c
        )
        name = ds.class_names[c]
        info[name].update(generator=choice[c][0], generator_reason=choice[c][1], filter=counts)
    return synthetic, {ds.class_names[c]: info[ds.class_names[c]] for c in classes}


def choose_generator(ds: ImageDataset, c: int, cfg: RunConfig) -> tuple[str, str]:
    """(generator, why) for class c under cfg.generator."""
    counts = ds.train_counts()
    donors = [i for i, n in enumerate(counts) if i != c and n > NEIGHBOURS]
    if cfg.generator == "per-class":
        return "per-class", "asked for (generator per-class)"
    if cfg.generator == "transfer":
        if not donors and counts[c] <= NEIGHBOURS:
            raise ValueError(
                f"generator transfer needs a class with more than {NEIGHBOURS} training images"
            )
        return "transfer", "asked for (generator transfer)"
    if counts[c] >= cfg.transfer_below:
        return (
            "per-class",
            f"{counts[c]} training images (>= {cfg.transfer_below}): enough for its own GAN",
        )
    if not donors:
        return (
            "per-class",
            f"no other class has more than {NEIGHBOURS} images to learn variation from",
        )
    return "transfer", (
        f"{counts[c]} training images (< {cfg.transfer_below}): variation learned from"
        f" {len(donors)} other class(es)"
    )


def transfer_candidates(ds, classes, need, cfg, device, progress) -> tuple[dict, dict]:
    """FILTER.factor x need[c] variations of class c's real images, for every c in classes."""
    tcfg = TransferConfig(pairs=cfg.transfer_pairs, steps=cfg.transfer_steps)
    model = fit_field_model(
        ds.train_images.to(device),
        ds.train_labels,
        tcfg,
        seed=cfg.seed,
        on_step=lambda i: progress(i / tcfg.steps),
        step_every=cfg.progress_every,
        engine=cfg.engine,
    )
    candidates, info = {}, {}
    for c in classes:
        sources = ds.train_images[ds.train_labels == c].to(device)
        candidates[c] = generate_variations(model, sources, FILTER.factor * need[c], cfg.seed + c)
        info[ds.class_names[c]] = {
            "seconds": model.seconds,  # fitting the one variation model shared by these classes
            "trained_jointly_with": len(classes),
            "train_images": len(sources),
            "generated": int(len(candidates[c])),
            "variation_model": {
                "pairs": model.pairs,
                "max_shift_px": model.max_shift,
                "spread_scale": tcfg.spread_scale,
                "pair_mse_before": round(model.loss_start, 5),
                "pair_mse_after": round(model.loss_end, 5),
                "registration_loss": model.loss_curve,
            },
        }
    return candidates, info


def per_class_candidates(ds, classes, need, cfg, device, progress) -> tuple[dict, dict]:
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
        on_step=lambda i: progress(i / iters),
        step_every=cfg.progress_every,
        engine=cfg.engine,
    )
    wanted = [FILTER.factor * need[c] for c in classes]
    images = generate(result.generator, wanted, cfg.gan_latent, cfg.gan_batch, cfg.seed + 1)
    info = {
        ds.class_names[c]: {
            "iterations": iters,
            "seconds": result.seconds,  # wall time of the joint training of all minority GANs
            "trained_jointly_with": len(classes),
            "train_images": counts[k],
            "generated": wanted[k],
            "diff_augment": counts[k] < cfg.diffaug_below,
            "loss_every": result.loss_every,
            "d_loss": [round(float(v), 4) for v in result.d_loss[:, k]],
            "g_loss": [round(float(v), 4) for v in result.g_loss[:, k]],
        }
        for k, c in enumerate(classes)
    }
    return dict(zip(classes, images, strict=True)), info


def train_judge(ds: ImageDataset, cfg: RunConfig, device: torch.device) -> SmallCNN:
    """A SmallCNN on the real training images, minority classes oversampled to the largest.

    Oversampled so it does not call every doubtful image a majority class; trained like the
    compared classifiers (same epochs, batch, learning rate, augmentation), one member.
    """
    t = time.perf_counter()
    labels = ds.train_labels.numpy()
    pool = oversampled_indices(
        labels, int(np.bincount(labels).max()), np.random.default_rng(cfg.seed)
    )
    steps = cfg.epochs * math.ceil(len(pool) / cfg.classifier_batch)
    judge = train_classifiers(
        ds.train_images.to(device),
        ds.train_labels.to(device),
        torch.tensor(pool, device=device).view(1, -1),
        torch.tensor([len(pool)], device=device),
        [0],
        len(ds.class_names),
        steps=steps,
        batch=cfg.classifier_batch,
        lr=cfg.classifier_lr,
        seed=cfg.seed + 7,
        engine=cfg.engine,
        augmentation=augmentation_for(cfg.classifier_augment),
    )
    judge.train_seconds = time.perf_counter() - t
    return judge


def oversampled_indices(labels: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """All real images, plus minority images repeated at random until each class has `target`."""
    extra = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < target:
            extra.append(rng.choice(idx, target - len(idx), replace=True))
    return np.concatenate([np.arange(len(labels)), *extra])
