"""pipeline/balance.py: synthesize on small real digits: generators, shares, the proxy test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.common import load_digits
from pipeline.balance import FILTER, oversample_draws, oversampled_indices, synthesize
from pipeline.config import RunConfig
from pipeline.dataset import ImageDataset
from pipeline.run import compare_classifiers
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


def check_balanced(ds: ImageDataset, balanced, need: dict[int, int]) -> None:
    """Every class gets exactly need[c] new images: generated ones plus its own real copies."""
    labels = ds.train_labels.numpy()
    for c, n in need.items():
        syn, copies = balanced.synthetic[c], balanced.copies[c]
        assert len(syn) + len(copies) == n
        assert syn.dtype == torch.uint8 and tuple(syn.shape[1:]) == tuple(ds.train_images.shape[1:])
        assert (labels[copies] == c).all()  # repeated images are the class's own
        section = balanced.info[ds.class_names[c]]
        assert section["synthetic"] == len(syn) and section["repeated_real"] == len(copies)
        sel = section["selection"]
        assert set(sel) == {"chosen", "share", "reason", "candidates", "proxy_worlds"}
        assert 0.0 <= sel["share"] <= 1.0 and sel["reason"]
        assert len(syn) <= round(sel["share"] * n)  # never more generated than the share


def test_auto_runs_the_proxy_test_and_reports_it(digits):
    """auto: every candidate is scored on proxy worlds and the report says what and why."""
    ds = dataset({"one": digits[1][:40], "two": digits[2][:3], "three": digits[3][:40]})
    need = {1: 37}
    calls = []
    cfg = RunConfig(**SMALL, progress_every=1).resolved()
    balanced = synthesize(ds, need, cfg, torch.device("cpu"), lambda *a: calls.append(a))
    check_balanced(ds, balanced, need)
    sel = balanced.info["two"]["selection"]
    # Two proxy worlds (quick preset): "one" and "three" cut to 3 images, in turn.
    assert [w["class"] for w in sel["proxy_worlds"]] == ["one", "three"]
    assert all(w["kept"] == 3 for w in sel["proxy_worlds"])
    tried = {(c["generator"], c["share"]) for c in sel["candidates"]}
    assert tried == {(g, s) for g in ("per-class", "transfer", "translation") for s in (0.5, 1.0)}
    for c in sel["candidates"]:
        for key in ("balanced", "minority"):
            assert (
                len(c[key]["ci95"]) == 2
                and c[key]["ci95"][0] <= c[key]["diff"] <= c[key]["ci95"][1]
            )
    assert sel["chosen"] in ("per-class", "transfer", "translation")
    stages = balanced.info["two"]["selection_stage_seconds"]
    assert set(stages) >= {"judges", "transfer", "translation", "per-class", "filter"}
    assert {stage for stage, _ in calls} == {"training_gan"}
    fractions = [f for _, f in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_share_zero_is_exactly_oversampling(digits, monkeypatch):
    """synthetic_share 0: nothing generated, and the gan method's data are the oversample
    method's data, image for image."""
    ds = dataset({"one": digits[1][:30], "two": digits[2][:4], "three": digits[3][:9]})
    counts = ds.train_counts()
    need = {c: 30 - n for c, n in enumerate(counts) if n < 30}
    cfg = RunConfig(**SMALL, synthetic_share=0, seeds=1).resolved()
    balanced = synthesize(ds, need, cfg, torch.device("cpu"), lambda *a: None)
    assert all(len(v) == 0 for v in balanced.synthetic.values())
    assert all(info["generator"] == "oversample" for info in balanced.info.values())
    labels = ds.train_labels.numpy()
    expected = oversampled_indices(labels, 30, np.random.default_rng(cfg.seed))
    gan_pool = np.concatenate([np.arange(len(labels)), *[balanced.copies[c] for c in (1, 2)]])
    assert np.array_equal(gan_pool, expected)  # the same images, in the same order
    # And through the comparison: the gan and oversample members train on the same pool.
    seen = {}

    def spy(images, labels_, pools, sizes, *args, **kwargs):
        seen["pools"] = [pools[m, : sizes[m]].tolist() for m in range(len(pools))]
        raise StopIteration

    monkeypatch.setattr("pipeline.classifier.train_classifiers", spy)
    with pytest.raises(StopIteration):
        compare_classifiers(ds, balanced, 30, cfg, torch.device("cpu"), lambda *a: None)
    baseline, oversample, gan = seen["pools"]
    assert oversample == gan and len(baseline) == len(labels)


def test_explicit_generator_and_share_skip_the_proxy_test(digits):
    ds = dataset({"one": digits[1][:30], "two": digits[2][:5]})
    cfg = RunConfig(**SMALL, generator="per-class", synthetic_share=1.0).resolved()
    balanced = synthesize(ds, {1: 25}, cfg, torch.device("cpu"), lambda *a: None)
    check_balanced(ds, balanced, {1: 25})
    info = balanced.info["two"]
    assert info["selection"]["candidates"] == [] and info["selection"]["proxy_worlds"] == []
    assert info["selection"]["reason"].startswith("asked for")
    f = info["filter"]
    assert f["candidates"] == FILTER.factor * 25
    assert f["candidates"] == f["rejected_label"] + f["rejected_copy"] + f["passed"]
    # Share 1: every place a generated image passed for is generated; the rest falls back.
    assert info["synthetic"] == f["kept"] and info["repeated_real"] == f["fallback_real"]
    assert info["iterations"] == 4 and "d_loss" in info


def test_half_share_asked_for(digits):
    ds = dataset({"one": digits[1][:30], "two": digits[2][:5]})
    cfg = RunConfig(**SMALL, generator="translation", synthetic_share=0.5).resolved()
    balanced = synthesize(ds, {1: 25}, cfg, torch.device("cpu"), lambda *a: None)
    check_balanced(ds, balanced, {1: 25})
    assert balanced.info["two"]["repeated_real"] >= 12  # round(0.5 x 25) = 12 generated at most


def test_synthesize_rgb_with_transfer(digits):
    """Three channels at 32 px: digits tinted a colour per class, every class by transfer."""
    tint = {"red": (1.0, 0.2, 0.2), "green": (0.2, 1.0, 0.3), "blue": (0.3, 0.3, 1.0)}
    train = {}
    for (name, rgb), d, n in zip(tint.items(), (4, 7, 9), (30, 8, 2), strict=True):
        x = torch.nn.functional.interpolate(digits[d][:n].float(), size=32, mode="bilinear")
        train[name] = (x * torch.tensor(rgb).view(1, 3, 1, 1)).round().clamp(0, 255).byte()
    ds = dataset(train, size=32, channels=3)
    need = {1: 22, 2: 28}
    cfg = RunConfig(**SMALL, generator="transfer", synthetic_share=1.0).resolved()
    balanced = synthesize(ds, need, cfg, torch.device("cpu"), lambda *a: None)
    check_balanced(ds, balanced, need)
    for c, name in ((1, "green"), (2, "blue")):
        info = balanced.info[name]
        assert (
            info["variation_model"]["pair_mse_after"] < info["variation_model"]["pair_mse_before"]
        )
        if len(balanced.synthetic[c]):  # still the class's colour: varied, not mixed
            mean = balanced.synthetic[c].float().mean((0, 2, 3))
            assert mean.argmax() == c


def test_transfer_needs_a_class_to_learn_from():
    ds = blank([NEIGHBOURS, 3])
    cfg = RunConfig(**SMALL, generator="transfer").resolved()
    with pytest.raises(ValueError, match=f"more than {NEIGHBOURS} training images"):
        synthesize(ds, {1: 2}, cfg, torch.device("cpu"), lambda *a: None)


def test_oversample_draws_match_the_oversample_method():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 6)
    draws = oversample_draws(labels, {1: 7, 2: 4}, seed=5)
    full = oversampled_indices(labels, 10, np.random.default_rng(5))
    assert np.array_equal(np.concatenate([draws[1], draws[2]]), full[len(labels) :])


@pytest.mark.parametrize(
    "values,message",
    [
        ({"generator": "gan"}, "generator must be one of auto, per-class, transfer, translation"),
        ({"synthetic_share": 1.5}, "synthetic_share must be auto or a number from 0 to 1"),
        ({"synthetic_share": "half"}, "synthetic_share must be auto or a number from 0 to 1"),
        ({"proxy_worlds": 0}, "proxy_worlds must be between 1 and"),
        ({"transfer_pairs": 8}, "transfer_pairs must be between 16 and"),
        ({"transfer_steps": 0}, "transfer_steps must be between 1 and"),
    ],
)
def test_generator_options_are_validated(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(values)


def test_presets_set_the_transfer_budget_and_proxy_worlds():
    quick, standard = RunConfig(preset="quick").resolved(), RunConfig().resolved()
    assert (quick.transfer_pairs, quick.transfer_steps) == (256, 100)
    assert (standard.transfer_pairs, standard.transfer_steps) == (2048, 300)
    assert (quick.proxy_worlds, standard.proxy_worlds) == (2, 3)
    assert RunConfig(preset="quick", transfer_steps=7).resolved().transfer_steps == 7
