"""pipeline/balance.py: which generator a class gets, and synthesize on small real digits."""

from __future__ import annotations

import pytest
import torch

from bench.common import load_digits
from pipeline.balance import FILTER, synthesize
from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset
from pipeline.transfer import NEIGHBOURS

# Tiny budgets: the point is the plumbing, not the quality of the images.
SMALL = dict(
    preset="quick",
    device="cpu",
    engine="eager",
    gan_iterations=4,
    gan_width=8,
    gan_batch=8,
    epochs=1,
    transfer_pairs=32,
    transfer_steps=5,
)


def dataset(train: dict[str, torch.Tensor], size: int = 28, channels: int = 1) -> ImageDataset:
    """An in-memory dataset: train[name] uint8 [n, C, S, S]; two test images per class."""
    names = list(train)
    images = torch.cat(list(train.values()))
    labels = torch.cat([torch.full((len(x),), c) for c, x in enumerate(train.values())])
    test = torch.cat([x[:2] for x in train.values()])
    return ImageDataset(
        class_names=names,
        image_size=size,
        channels=channels,
        train_images=images,
        train_labels=labels,
        train_entries=[f"{names[c]}/{i}.png" for i, c in enumerate(labels.tolist())],
        test_images=test,
        test_labels=torch.cat(
            [torch.full((min(2, len(x)),), c) for c, x in enumerate(train.values())]
        ),
        test_source="split",
        warnings=[],
    )


def blank(counts: list[int]) -> ImageDataset:
    return dataset(
        {f"c{i}": torch.zeros(n, 1, 8, 8, dtype=torch.uint8) for i, n in enumerate(counts)}, 8
    )


@pytest.fixture(scope="module")
def digits() -> dict[int, torch.Tensor]:
    """50 MNIST images of each digit 0..9: uint8 [50, 1, 28, 28]."""
    images, labels = load_digits()
    return {
        d: torch.from_numpy(images[(labels == d).nonzero()[0][:50]]).unsqueeze(1) for d in range(10)
    }


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "counts,c,expected,why",
    [
        ([300, 3], 1, "transfer", "3 training images (< 10): variation learned from 1 other"),
        ([300, 9], 1, "transfer", "(< 10)"),
        ([300, 10], 1, "per-class", "10 training images (>= 10): enough for its own GAN"),
        ([300, 50], 1, "per-class", "(>= 10)"),
        ([NEIGHBOURS + 1, 3], 1, "transfer", "from 1 other class"),
        ([NEIGHBOURS, 3], 1, "per-class", f"no other class has more than {NEIGHBOURS} images"),
        ([2, 3, 4], 0, "per-class", "no other class"),
        ([300, 200, 1], 2, "transfer", "from 2 other class(es)"),
    ],
)
def test_auto(counts, c, expected, why):
    generator, reason = choose_generator(blank(counts), c, RunConfig(generator="auto"))
    assert generator == expected and why in reason


def test_auto_threshold_is_transfer_below():
    ds = blank([300, 30])
    assert choose_generator(ds, 1, RunConfig(transfer_below=31))[0] == "transfer"
    assert choose_generator(ds, 1, RunConfig(transfer_below=30))[0] == "per-class"
    assert choose_generator(ds, 1, RunConfig(transfer_below=0))[0] == "per-class"


def test_asked_for():
    ds = blank([300, 1])
    assert choose_generator(ds, 1, RunConfig(generator="per-class")) == (
        "per-class",
        "asked for (generator per-class)",
    )
    big = blank([300, 200])  # auto would give per-class; asked, it is transfer
    assert choose_generator(big, 1, RunConfig(generator="transfer")) == (
        "transfer",
        "asked for (generator transfer)",
    )
    # No other class to learn from, but the class itself has enough images for pairs.
    assert choose_generator(blank([2, 8]), 1, RunConfig(generator="transfer"))[0] == "transfer"


def test_transfer_without_donors_is_a_clear_error():
    with pytest.raises(
        ValueError,
        match=f"generator transfer needs a class with more than {NEIGHBOURS} training images",
    ):
        choose_generator(blank([NEIGHBOURS, 3]), 1, RunConfig(generator="transfer"))


def check_section(info: dict, generator: str, need: int, train_images: int) -> None:
    assert info["generator"] == generator and info["generator_reason"]
    assert info["train_images"] == train_images
    assert info["generated"] == FILTER.factor * need
    f = info["filter"]
    assert f["candidates"] == FILTER.factor * need and f["kept"] == need
    assert f["candidates"] == f["rejected_label"] + f["rejected_copy"] + f["passed"]
    assert f["filled_with_rejected"] == max(0, need - f["passed"])
    assert ("variation_model" in info) == (generator == "transfer")
    assert ("d_loss" in info) == (generator == "per-class")


def test_synthesize_mixed_generators_on_digits(digits):
    """auto: 3 images -> transfer, 12 -> per-class, both filtered to exactly the need."""
    ds = dataset({"one": digits[1][:40], "two": digits[2][:3], "three": digits[3][:12]})
    need = {1: 37, 2: 28, 0: 0}
    calls = []
    cfg = RunConfig(**SMALL, progress_every=1).resolved()
    synthetic, info = synthesize(ds, need, cfg, torch.device("cpu"), lambda *a: calls.append(a))
    assert set(synthetic) == {1, 2} and list(info) == ["two", "three"]
    for c in (1, 2):
        assert synthetic[c].shape == (need[c], 1, 28, 28) and synthetic[c].dtype == torch.uint8
    check_section(info["two"], "transfer", 37, 3)
    check_section(info["three"], "per-class", 28, 12)
    vm = info["two"]["variation_model"]
    assert vm["pairs"] == 32 and len(vm["registration_loss"]) == 5
    assert vm["pair_mse_after"] < vm["pair_mse_before"]
    # Progress: transfer's 5 steps fill the first half (one of two classes), the GAN's 4 the rest.
    assert {stage for stage, _ in calls} == {"training_gan"}
    fractions = [f for _, f in calls]
    assert fractions == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.625, 0.75, 0.875, 1.0])


def test_synthesize_rgb_with_transfer(digits):
    """Three channels at 32 px: digits tinted a colour per class, every class by transfer."""
    tint = {"red": (1.0, 0.2, 0.2), "green": (0.2, 1.0, 0.3), "blue": (0.3, 0.3, 1.0)}
    train = {}
    for (name, rgb), d, n in zip(tint.items(), (4, 7, 9), (30, 8, 2), strict=True):
        x = torch.nn.functional.interpolate(digits[d][:n].float(), size=32, mode="bilinear")
        train[name] = (x * torch.tensor(rgb).view(1, 3, 1, 1)).round().clamp(0, 255).byte()
    ds = dataset(train, size=32, channels=3)
    need = {1: 22, 2: 28}
    cfg = RunConfig(**SMALL, generator="transfer").resolved()
    synthetic, info = synthesize(ds, need, cfg, torch.device("cpu"), lambda *a: None)
    for c, name, n in ((1, "green", 8), (2, "blue", 2)):
        assert synthetic[c].shape == (need[c], 3, 32, 32) and synthetic[c].dtype == torch.uint8
        check_section(info[name], "transfer", need[c], n)
        # Still the class's colour: varied, not mixed with other classes' images.
        mean = synthetic[c].float().mean((0, 2, 3))
        assert mean.argmax() == c


@pytest.mark.parametrize(
    "values,message",
    [
        ({"generator": "gan"}, "generator must be auto, per-class or transfer, got 'gan'"),
        ({"transfer_below": -1}, "transfer_below must be between 0 and"),
        ({"transfer_pairs": 8}, "transfer_pairs must be between 16 and"),
        ({"transfer_steps": 0}, "transfer_steps must be between 1 and"),
    ],
)
def test_generator_options_are_validated(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(values)


def test_presets_set_the_transfer_budget():
    quick, standard = RunConfig(preset="quick").resolved(), RunConfig().resolved()
    assert (quick.transfer_pairs, quick.transfer_steps) == (256, 100)
    assert (standard.transfer_pairs, standard.transfer_steps) == (2048, 300)
    assert RunConfig(preset="quick", transfer_steps=7).resolved().transfer_steps == 7
