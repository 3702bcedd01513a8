"""The transfer generator (pipeline/transfer.py): shapes, what a field does, a CPU smoke fit."""

from __future__ import annotations

import pytest
import torch

from bench.common import load_digits
from pipeline.transfer import (
    NEIGHBOURS,
    FieldModel,
    TransferConfig,
    fit_field_model,
    generate_variations,
    neighbour_pairs,
    vary,
)
from tests.conftest import CUDA_SKIP_REASON

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST digits 1, 2, 3, 40 of each: uint8 [120, 1, 28, 28], labels 0, 1, 2."""
    images, labels = load_digits()
    idx = [i for d in (1, 2, 3) for i in (labels == d).nonzero()[0][:40]]
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    y = torch.tensor(labels[idx], dtype=torch.int64) - 1
    return x, y


def dark_image_with_column(size: int, column: int) -> torch.Tensor:
    """[1, 1, size, size] in [-1, 1]: black with one bright 1-px column."""
    x = torch.full((1, 1, size, size), -1.0)
    x[..., column] = 1.0
    return x


def constant_field(size: int, dx: float = 0.0, dy: float = 0.0, t: float = 0.0) -> torch.Tensor:
    g = size // 4
    return torch.tensor([dx, dy, t]).view(1, 3, 1, 1).expand(1, 3, g, g).contiguous()


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_dtypes(size, channels):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, channels, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([0] * 6 + [1] * 6)
    model = fit_field_model(images, labels, TransferConfig(pairs=16, steps=2), engine="eager")
    g = size // 4
    assert model.grid == g and model.mean.shape == (3 * g * g,)
    assert model.chol.shape == (3 * g * g, 3 * g * g) and torch.isfinite(model.chol).all()

    fields = model.sample(5, gen)
    assert fields.shape == (5, 3, g, g) and fields.dtype == torch.float32
    assert fields.abs().max() <= 1

    x = images[:5].float() / 127.5 - 1
    y = vary(x, fields, model.max_shift)
    assert y.shape == (5, channels, size, size) and y.dtype == torch.float32
    assert y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5  # warp and blends stay in range

    out = generate_variations(model, images[6:9], 7, seed=1)
    assert out.shape == (7, channels, size, size) and out.dtype == torch.uint8
    assert out.device.type == "cpu"
    assert len(generate_variations(model, images[6:9], 0, seed=1)) == 0


def test_generate_variations_shares_the_sources_evenly():
    """With a zero-spread, zero-mean model every variation is its source, each used equally."""
    g = 7
    model = FieldModel(
        mean=torch.zeros(3 * g * g),
        chol=torch.zeros(3 * g * g, 3 * g * g),
        grid=g,
        max_shift=3.0,
        seconds=0.0,
        pairs=0,
        loss_start=0.0,
        loss_end=0.0,
        loss_curve=[],
    )
    sources = torch.stack([torch.full((1, 28, 28), v, dtype=torch.uint8) for v in (0, 90, 200)])
    out = generate_variations(model, sources, 12, seed=3, batch=5)  # batches of 5, 5, 2
    values = sorted(int(img.float().mean()) for img in out)
    assert values == [0] * 4 + [90] * 4 + [200] * 4


def test_zero_field_returns_the_input():
    x = torch.rand(3, 3, 28, 28) * 2 - 1
    y = vary(x, torch.zeros(3, 3, 7, 7), max_shift=3.0)
    assert torch.allclose(y, x, atol=1e-5)


def test_shift_moves_the_image_by_max_shift():
    """dx = 1 everywhere shifts by max_shift px: output(x) = input(x + 3), a column at 10 -> 7."""
    x = dark_image_with_column(28, 10)
    y = vary(x, constant_field(28, dx=1.0), max_shift=3.0)
    assert (y - x).abs().max() > 1  # a non-zero field changes the image
    assert y[0, 0].mean(0).argmax() == 7
    down = vary(x.transpose(-1, -2), constant_field(28, dy=-1.0), max_shift=3.0)
    assert down[0, 0].mean(1).argmax() == 13  # dy < 0: a row at 10 moves to 13


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_thickness_grows_and_shrinks_bright_strokes(t):
    x = torch.full((1, 1, 28, 28), -1.0)
    x[..., 8:20, 12:15] = 1.0  # a 3-px-wide bright stroke on black

    def mass(img):
        return float((img + 1).sum())

    thicker = vary(x, constant_field(28, t=t), max_shift=3.0)
    thinner = vary(x, constant_field(28, t=-t), max_shift=3.0)
    assert mass(thicker) > mass(x) * (1 + 0.5 * t)  # dilation adds a pixel each side
    assert mass(thinner) < mass(x) * (1 - 0.3 * t)  # erosion removes one


def test_neighbour_pairs_stay_in_class_and_skip_small_classes():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.tensor([0] * 12 + [1] * 3 + [2] * 5)  # only class 0 has > NEIGHBOURS
    a, b = neighbour_pairs(images, labels, 50, seed=0)
    assert a.shape == b.shape == (50,) and a.dtype == torch.int64
    assert (labels[a] == 0).all() and (labels[b] == 0).all() and (a != b).all()
    flat = images.flatten(1).float()
    for i, j in zip(a.tolist(), b.tolist(), strict=True):
        d = torch.cdist(flat[i : i + 1], flat[:12])[0]
        d[i] = float("inf")
        assert d[j] <= d.sort().values[NEIGHBOURS - 1]  # among the 5 nearest
    with pytest.raises(ValueError, match=f"more than {NEIGHBOURS} images"):
        neighbour_pairs(images[12:], labels[12:], 10, seed=0)


def test_smoke_fit_on_digits(digits):
    """A small registration on the CPU: finite, and it explains part of the pair differences."""
    images, labels = digits
    cfg = TransferConfig(pairs=64, steps=40)
    seen = []
    model = fit_field_model(images, labels, cfg, seed=0, on_step=seen.append, step_every=10)
    assert seen == [10, 20, 30, 40]
    assert model.pairs == 64 and model.seconds > 0
    assert all(map(lambda v: v == v and abs(v) < float("inf"), model.loss_curve))
    assert 0 < model.loss_end < model.loss_start
    assert model.loss_curve[-1] < model.loss_curve[0]
    assert torch.isfinite(model.mean).all() and torch.isfinite(model.chol).all()
    out = generate_variations(model, images[labels == 1][:3], 30, seed=0)
    assert out.shape == (30, 1, 28, 28)
    # Varied, not copied: most variations differ from every source image somewhere.
    sources = images[labels == 1][:3].flatten(1).float()
    nearest = torch.cdist(out.flatten(1).float(), sources).min(1).values
    assert (nearest > 0).float().mean() > 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)
def test_graph_registration_matches_eager(digits):
    """The registration has no randomness: graph replays and the eager loop agree up to
    rounding (fused vs foreach Adam), and the fitted distributions match."""
    images, labels = digits
    cfg = TransferConfig(pairs=128, steps=60)
    models = [
        fit_field_model(images.cuda(), labels.cuda(), cfg, engine=e) for e in ("eager", "graph")
    ]
    eager, graph = models
    assert len(graph.loss_curve) == len(eager.loss_curve) == 60
    assert graph.loss_curve == pytest.approx(eager.loss_curve, rel=0.02, abs=1e-4)
    assert graph.loss_end < graph.loss_start
    torch.testing.assert_close(graph.mean, eager.mean, rtol=0.05, atol=0.05)
