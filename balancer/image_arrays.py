"""numpy image arrays <-> the pipeline's uint8 [N, C, S, S] tensors at a square working size.

Shapes: X is (n, H, W), (n, H, W, C) or flat rows (n, H*W*C) with image_shape (H, W) or
(H, W, C); a flat row is the image in row-major (H, W, C) order, as numpy's reshape gives it.
C is 1 or 3.

Values: uint8 input is taken as pixels 0..255. Any other dtype is mapped linearly from the
data set's own [min, max] onto 0..255 (one range for all of X, so it works alike for [0, 1],
[0, 255], sklearn's 0..16 digits or standardised data) and generated images are mapped back
onto [min, max] in the input's dtype (rounded for integer dtypes). The mapping is exactly
invertible; the only loss is the 8-bit step of (max - min) / 255 in the generated images.

Size: the GAN works at a square side S that is a multiple of 4 (its upsampling plan): the
largest input side rounded up to a multiple of 4, at least 16 (a 4x4 start and two 2x steps)
and at most the pipeline's 64. Images are stretched bilinearly to S x S and the generated
ones resized back (antialiased) to H x W, e.g. sklearn's 8x8 digits are worked on at 16x16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.dataset import LARGE_WORKING_SIZE

MIN_WORKING_SIZE = 16


@dataclass(frozen=True)
class ImageArrays:
    """How the rows of one X are images, and how to turn generated images back into rows."""

    row_shape: tuple[int, ...]  # X.shape[1:]
    height: int
    width: int
    channels: int
    dtype: np.dtype
    lo: float  # X.min(), mapped to pixel 0 (0 for uint8)
    hi: float  # X.max(), mapped to pixel 255 (255 for uint8)

    @classmethod
    def describe(cls, X: np.ndarray, image_shape: tuple[int, ...] | None) -> ImageArrays:
        """Raise ValueError naming the problem if X's rows cannot be read as images."""
        h, w, c = _image_hwc(X.shape, image_shape)
        if X.dtype == np.uint8:
            lo, hi = 0.0, 255.0
        else:
            lo, hi = float(X.min()), float(X.max())
        return cls(X.shape[1:], h, w, c, X.dtype, lo, hi)

    def to_pixels(self, X: np.ndarray, size: int) -> torch.Tensor:
        """X -> uint8 [n, C, size, size]."""
        x = X.reshape(len(X), self.height, self.width, self.channels)
        if self.dtype != np.uint8:
            span = self.hi - self.lo
            scaled = (x.astype(np.float64) - self.lo) * (255.0 / span) if span else x * 0.0
            x = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        if (self.height, self.width) == (size, size):
            return t
        return _resize(t.float(), (size, size)).round().clamp(0, 255).to(torch.uint8)

    def from_pixels(self, images: torch.Tensor) -> np.ndarray:
        """uint8 [n, C, S, S] -> rows in X's form and dtype."""
        x = images.float()
        if tuple(x.shape[-2:]) != (self.height, self.width):
            x = _resize(x, (self.height, self.width)).clamp(0, 255)
        v = x.permute(0, 2, 3, 1).numpy().astype(np.float64)
        v = self.lo + v * ((self.hi - self.lo) / 255.0)
        if self.dtype == np.bool_ or np.issubdtype(self.dtype, np.integer):
            v = np.rint(v)
        v = np.clip(v, self.lo, self.hi).astype(self.dtype)
        return v.reshape(len(v), *self.row_shape)


def working_size(height: int, width: int) -> int:
    """The GAN's square side for images of height x width (see the module docstring)."""
    side = 4 * math.ceil(max(height, width) / 4)
    return min(max(side, MIN_WORKING_SIZE), LARGE_WORKING_SIZE)


def _image_hwc(shape: tuple[int, ...], image_shape: tuple[int, ...] | None) -> tuple[int, int, int]:
    if len(shape) in (3, 4):
        hwc = (*shape[1:3], shape[3] if len(shape) == 4 else 1)
        if image_shape is not None and _as_hwc(image_shape) != hwc:
            raise ValueError(
                f"image_shape={tuple(image_shape)} does not match X of shape {shape}: "
                "leave image_shape out when X already holds images"
            )
    elif len(shape) == 2:
        if image_shape is None:
            side = math.isqrt(shape[1])
            if side * side != shape[1]:
                raise ValueError(
                    f"X has {shape[1]} features per row, not a square grayscale image: "
                    "give image_shape=(height, width) or (height, width, channels)"
                )
            image_shape = (side, side)
        hwc = _as_hwc(image_shape)
        if math.prod(hwc) != shape[1]:
            raise ValueError(
                f"image_shape={tuple(image_shape)} holds {math.prod(hwc)} values "
                f"but X has {shape[1]} features per row"
            )
    else:
        raise ValueError(
            f"X must be (n, H, W), (n, H, W, C) or (n, features) rows, got shape {shape}"
        )
    if hwc[2] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {hwc[2]}")
    return hwc


def _as_hwc(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    dims = tuple(int(d) for d in image_shape)
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise ValueError(
            f"image_shape must be (height, width) or (height, width, channels), "
            f"got {tuple(image_shape)}"
        )
    return (dims[0], dims[1], dims[2] if len(dims) == 3 else 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
