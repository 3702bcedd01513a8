"""Classifier augmentation (pipeline/augment.py): what it does to batches, and where it runs."""

from __future__ import annotations

import pytest
import torch

from pipeline.augment import (
    Augmentation,
    augment,
    augmentation_for,
    augmentation_report,
    resolve_policy,
)
from pipeline.classifier import classifier_step, make_classifier_state, train_classifiers
from pipeline.config import RunConfig

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FLIP_ONLY = Augmentation(rotate_deg=0.0, scale_min=1.0, scale_max=1.0, shift_px=0.0, flip=True)
NO_CHANGE = Augmentation(rotate_deg=0.0, scale_min=1.0, scale_max=1.0, shift_px=0.0)


def asymmetric_batch(n: int = 64, size: int = 16) -> torch.Tensor:
    """n copies of an "L"-like stroke in the left half: its mirror image is a different one."""
    x = torch.full((n, 1, size, size), -1.0)
    x[:, :, 3:13, 3:5] = 1.0  # vertical bar, left
    x[:, :, 11:13, 3:9] = 1.0  # foot pointing right
    return x


def test_policies_resolve():
    assert resolve_policy("auto") == "affine"
    assert augmentation_for("none") is None
    assert augmentation_for("auto") == Augmentation()
    assert augmentation_for("affine+flip").flip and not augmentation_for("affine").flip
    with pytest.raises(ValueError, match="classifier_augment must be one of"):
        resolve_policy("rotate")


def test_config_validates_policy():
    assert RunConfig().classifier_augment == "auto"
    assert RunConfig.from_dict({"classifier_augment": "affine+flip"}).classifier_augment
    with pytest.raises(ValueError, match="classifier_augment must be one of auto, none"):
        RunConfig.from_dict({"classifier_augment": "flip"})


def test_report_records_resolved_policy():
    auto = augmentation_report("auto")
    assert auto["policy"] == "auto" and auto["resolved"] == "affine"
    assert auto["rotation_degrees"] == 15.0 and auto["scale"] == [0.9, 1.1]
    assert auto["shift_px"] == 2.0 and auto["horizontal_flip"] is False
    assert "rotation ±15°, scale 0.9–1.1, shift ±2 px" in auto["description"]
    assert augmentation_report("none")["description"].endswith("without augmentation")


def test_affine_changes_images_keeps_shape_and_range():
    torch.manual_seed(0)
    x = asymmetric_batch()
    y = augment(x, Augmentation())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= -1.0 and y.max() <= 1.0
    changed = (y - x).abs().flatten(1).amax(1) > 0.1
    assert changed.float().mean() > 0.9  # nearly every image moved
    # Each image gets its own transform, not one per batch.
    assert len({tuple(r.round(decimals=3).tolist()) for r in y.flatten(1)}) > 50
    # The background comes back as background (border fill), not as mid-grey corners.
    assert y[:, :, 0, 0].max() == -1.0 and y[:, :, -1, -1].max() == -1.0


def test_identity_parameters_keep_images():
    x = asymmetric_batch()
    torch.testing.assert_close(augment(x, NO_CHANGE), x)


def test_flip_mirrors_about_half_and_affine_never_does():
    torch.manual_seed(0)
    x = asymmetric_batch(n=400)
    mirror = x.flip(-1)

    def is_mirror(y: torch.Tensor) -> torch.Tensor:
        return (y - mirror).abs().flatten(1).amax(1) < 1e-5

    def is_same(y: torch.Tensor) -> torch.Tensor:
        return (y - x).abs().flatten(1).amax(1) < 1e-5

    flipped = augment(x, FLIP_ONLY)
    mirrored, same = is_mirror(flipped), is_same(flipped)
    assert (mirrored | same).all()  # exact mirror or exact copy, nothing in between
    assert 0.35 < mirrored.float().mean() < 0.65
    # affine alone never mirrors: the ink's centre stays left of the middle in every image,
    # however rotated, scaled and shifted; with affine+flip it is on the right for about half.
    assert (ink_centre_x(augment(x, Augmentation())) < 0).all()
    right = ink_centre_x(augment(x, Augmentation(flip=True))) > 0
    assert 0.35 < right.float().mean() < 0.65


def ink_centre_x(x: torch.Tensor) -> torch.Tensor:
    """Horizontal centre of the ink ((x + 1) / 2 as mass) in px from the image's middle: [N]."""
    ink = (x + 1) / 2
    cols = torch.arange(x.shape[-1], dtype=x.dtype) - (x.shape[-1] - 1) / 2
    return (ink.sum((1, 2)) * cols).sum(1) / ink.sum((1, 2, 3))


def _state(augmentation, device="cpu", engine="eager"):
    images = torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8, device=device)
    labels = (torch.arange(32, device=device) % 3).to(device)
    pools = torch.arange(32, device=device).repeat(2, 1)
    sizes = torch.tensor([32, 20], device=device)
    return make_classifier_state(
        images, labels, pools, sizes, [0, 0], 3, 4, 8, 1e-3, 0, engine, augmentation
    )


def _batches(augmentation) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run two classifier steps; capture what the model saw and the labels of that batch."""
    st = _state(augmentation)
    seen: list[torch.Tensor] = []
    st.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(1)
    for _ in range(2):
        classifier_step(st)
    return seen, st


def test_classifier_step_trains_on_augmented_batches():
    plain, st = _batches(None)
    aug, st_aug = _batches(Augmentation())
    for p, a in zip(plain, aug, strict=True):
        assert a.shape == p.shape and a.min() >= -1 and a.max() <= 1
    # The same batch indices are drawn first in both runs (the sampling draw comes before the
    # augmentation draw), so the images differ only by the transform.
    assert (plain[0] - aug[0]).abs().amax() > 0.1
    # With none, the model sees the stored images themselves (uint8 levels mapped to [-1, 1]).
    levels = plain[0].mul(127.5).add(127.5)
    torch.testing.assert_close(levels, levels.round(), atol=1e-4, rtol=0)
    # Training ran, with finite losses, for both members.
    assert torch.isfinite(st_aug.history[:2]).all()


def test_augmentation_keeps_labels():
    """The loss of a step is computed against the sampled images' own labels: a model that
    already knows every label keeps a low loss under augmentation only if labels stayed put."""
    torch.manual_seed(0)
    # Class = brightness of a flat image: invariant to any affine transform with border fill.
    levels = torch.tensor([0, 120, 250], dtype=torch.uint8)
    labels = torch.arange(60) % 3
    images = levels[labels].view(60, 1, 1, 1).expand(60, 1, 8, 8).contiguous()
    pools = torch.arange(60).repeat(1, 1)
    model = train_classifiers(
        images,
        labels,
        pools,
        torch.tensor([60]),
        [0],
        3,
        steps=100,
        batch=32,
        augmentation=Augmentation(flip=True),
    )
    assert model.loss_history[-10:].mean() < 0.3  # shuffled labels: about 1.1


def test_train_classifiers_on_cpu_with_augmentation():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (48, 1, 16, 16), dtype=torch.uint8)
    labels = torch.arange(48) % 2
    pools = torch.arange(48).repeat(2, 1)
    model = train_classifiers(
        images, labels, pools, torch.tensor([48, 30]), [0, 1], 2, 10, 16,
        augmentation=Augmentation(),
    )  # fmt: skip
    assert model.loss_history.shape == (10, 2) and torch.isfinite(model.loss_history).all()


@cuda
def test_augmentation_under_graph_engine():
    """Inside the captured step: every replay draws fresh transforms (losses vary), and the
    result follows the eager engine's (same draws in the same order)."""
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8).cuda()
    labels = (torch.arange(64) % 3).cuda()
    pools = torch.arange(64).repeat(3, 1).cuda()
    sizes = torch.tensor([64, 40, 20]).cuda()
    runs = []
    for engine in ("eager", "graph"):
        torch.manual_seed(0)
        runs.append(
            train_classifiers(
                images, labels, pools, sizes, [0, 1, 0], 3, 30, 16, engine=engine,
                augmentation=Augmentation(flip=True),
            ).loss_history
        )  # fmt: skip
    torch.testing.assert_close(runs[1], runs[0], rtol=0.02, atol=0.02)
    x = asymmetric_batch().cuda()
    out = torch.empty_like(x)
    side = torch.cuda.Stream()  # warm-up off the capturing stream, as PyTorch's docs ask
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out.copy_(augment(x, Augmentation()))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out.copy_(augment(x, Augmentation()))
    graph.replay()
    first = out.clone()
    graph.replay()
    assert (first - out).abs().amax() > 0.1  # fresh random transforms on every replay
