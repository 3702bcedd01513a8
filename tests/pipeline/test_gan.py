"""GAN smoke tests: shapes at several resolutions, finite losses, exact generated counts."""

from __future__ import annotations

import pytest
import torch

from pipeline.gan import (
    Discriminator,
    Generator,
    diff_augment,
    generate,
    train_class_gans,
    upsampling_plan,
)


@pytest.mark.parametrize(
    "size,plan", [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (16, (4, 2)), (8, (2, 2))]
)
def test_upsampling_plan(size, plan):
    assert upsampling_plan(size) == plan


@pytest.mark.parametrize("size", [8, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_and_discriminator_shapes(size, channels):
    g, d = Generator(2, 16, channels, size, width=8), Discriminator(2, channels, size, width=8)
    fake = g(torch.randn(2, 5, 16))
    assert fake.shape == (2, 5, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert d(fake).shape == (2, 5)


def test_members_are_independent():
    """Member 1's output gradient never reaches member 0's parameters."""
    g = Generator(2, 8, 1, 28, width=8)
    out = g(torch.randn(2, 4, 8))
    out[1].sum().backward()
    w = g.project.weight.grad
    assert w[0].abs().sum() == 0 and w[1].abs().sum() > 0


def test_diff_augment_keeps_shape_and_gradient():
    x = (torch.rand(6, 3, 28, 28) * 2 - 1).requires_grad_()
    y = diff_augment(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Cutout blanks a quarter of the image or so: some pixels become -1.
    assert (y == -1).float().mean() > 0.1


def test_train_and_generate_exact_counts():
    real = torch.rand(2, 5, 1, 28, 28) * 2 - 1
    result = train_class_gans(
        real, torch.tensor([5, 3]), torch.tensor([True, False]), iterations=6, batch=4, width=8
    )
    assert result.iterations == 6
    assert result.d_loss.shape == (6, 2) and torch.isfinite(result.d_loss).all()
    assert torch.isfinite(result.g_loss).all()
    images = generate(result.generator, [7, 130], latent=100, batch=64, seed=0)
    assert [len(x) for x in images] == [7, 130]
    assert images[0].dtype == torch.uint8 and images[0].shape[1:] == (1, 28, 28)


def test_generation_is_seeded():
    g = Generator(1, 100, 1, 28, width=8)
    a = generate(g, [5], latent=100, batch=8, seed=3)[0]
    b = generate(g, [5], latent=100, batch=8, seed=3)[0]
    assert torch.equal(a, b)
