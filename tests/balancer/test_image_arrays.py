"""Rows of X <-> the pipeline's uint8 [N, C, S, S] images: layout, value range, size (no GAN)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balancer.image_arrays import ImageArrays, working_size


def test_uint8_images_go_through_unchanged_at_their_own_size():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    arrays = ImageArrays.describe(X, None)
    pixels = arrays.to_pixels(X, 16)
    assert pixels.shape == (5, 3, 16, 16) and pixels.dtype == torch.uint8
    assert torch.equal(pixels, torch.from_numpy(X).permute(0, 3, 1, 2))
    assert np.array_equal(arrays.from_pixels(pixels), X)


def test_flat_rows_are_row_major_height_width_channels():
    X = np.zeros((1, 4 * 8 * 3), dtype=np.uint8)
    image = X.reshape(1, 4, 8, 3)
    image[0, 1, 6, 2] = 200  # row 1, column 6, blue
    arrays = ImageArrays.describe(X, (4, 8, 3))
    pixels = arrays.to_pixels(X, 16)  # stretched to 16x16: the spot lands near (6, 13)
    blue = pixels[0, 2].float()
    y, x = divmod(int(blue.argmax()), 16)
    assert (y, x) in {(r, c) for r in (5, 6) for c in (12, 13)}
    assert pixels[0, :2].max() == 0


@pytest.mark.parametrize(
    "X",
    [
        np.linspace(0.0, 1.0, 2 * 64).reshape(2, 64),  # [0, 1] floats
        np.arange(2 * 64, dtype=np.int64).reshape(2, 64) % 17,  # sklearn digits' 0..16
        np.linspace(-3.5, 2.0, 2 * 64, dtype=np.float32).reshape(2, 8, 8),  # standardised
    ],
    ids=["unit-float", "int-0-16", "float32-negative"],
)
def test_value_range_maps_onto_0_255_and_back(X):
    arrays = ImageArrays.describe(X, None)
    pixels = arrays.to_pixels(X, 8)
    assert int(pixels.min()) == 0 and int(pixels.max()) == 255  # the whole 8-bit range is used
    back = arrays.from_pixels(pixels)
    assert back.shape == X.shape and back.dtype == X.dtype
    step = (float(X.max()) - float(X.min())) / 255
    assert np.abs(back.astype(np.float64) - X).max() <= step / 2 + 1e-6


def test_resizing_to_the_working_size_and_back_keeps_the_picture():
    X = np.zeros((1, 8, 8), dtype=np.uint8)
    X[0, :4, :] = 255  # top half white
    arrays = ImageArrays.describe(X, None)
    pixels = arrays.to_pixels(X, 16)
    assert pixels.shape == (1, 1, 16, 16)
    assert pixels[0, 0, :7].min() == 255 and pixels[0, 0, 9:].max() == 0
    back = arrays.from_pixels(pixels)
    assert back.shape == (1, 8, 8)
    assert back[0, :3].min() >= 250 and back[0, 5:].max() <= 5


def test_constant_input_maps_to_its_one_value():
    X = np.full((3, 4, 4), 7.5)
    arrays = ImageArrays.describe(X, None)
    assert np.array_equal(arrays.from_pixels(arrays.to_pixels(X, 16)), X)


@pytest.mark.parametrize(
    ("side", "size"), [(1, 16), (8, 16), (16, 16), (17, 20), (28, 28), (32, 32), (500, 64)]
)
def test_working_size(side, size):
    assert working_size(side, 2) == size


@pytest.mark.parametrize(
    ("shape", "image_shape", "words"),
    [
        ((4, 20), None, "image_shape=(height, width)"),
        ((4, 20), (4, 4), "holds 16 values but X has 20"),
        ((4, 8, 8), (4, 16), "does not match X of shape"),
        ((4, 8, 8, 2), None, "1 or 3 channels"),
        ((4, 8, 8, 3, 1), None, "must be (n, H, W)"),
        ((4, 16), (4, 2, 2, 1), "image_shape must be"),
    ],
)
def test_shapes_that_are_not_images_are_refused_by_name(shape, image_shape, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ImageArrays.describe(np.zeros(shape), image_shape)
