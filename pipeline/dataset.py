"""Dataset zip -> tensors at one working resolution (the layout comes from pipeline.layout)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.archive import ArchiveLimits, decode_image, open_zip
from pipeline.layout import inspect_zip

SMALL_INPUT_MAX_SIDE = 32  # inputs up to this size are worked on at 28x28
SMALL_WORKING_SIZE = 28
LARGE_WORKING_SIZE = 64


@dataclass
class ImageDataset:
    """Decoded images at the working resolution, kept as uint8 (0..255) tensors on the CPU."""

    class_names: list[str]
    image_size: int  # side length in px (images are square)
    channels: int  # 1 or 3
    train_images: torch.Tensor  # uint8 [N, C, S, S]
    train_labels: torch.Tensor  # int64 [N]
    train_entries: list[str]  # zip entry of each training image, for packaging the originals
    test_images: torch.Tensor  # uint8 [T, C, S, S]
    test_labels: torch.Tensor  # int64 [T]
    test_source: str  # "explicit" (a test/ folder), "split" (held out here), "fold", "none"
    warnings: list[str]
    test_entries: list[str] = field(default_factory=list)  # zip entry of each test image

    def train_counts(self) -> list[int]:
        return torch.bincount(self.train_labels, minlength=len(self.class_names)).tolist()

    def test_counts(self) -> list[int]:
        return torch.bincount(self.test_labels, minlength=len(self.class_names)).tolist()


def load_dataset(
    path: Path,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_size: int | None = None,
    limits: ArchiveLimits | None = None,
) -> ImageDataset:
    """Decode every image of the zip into tensors at one working resolution."""
    layout = inspect_zip(path, test_fraction, seed, limits)
    with open_zip(path, limits) as zf:
        train = _decode_split(zf, layout.train, layout.class_names, limits)
        test = _decode_split(zf, layout.test, layout.class_names, limits)
    all_images = [img for img, _, _ in train + test]
    channels = 3 if any(img.mode == "RGB" for img in all_images) else 1
    if image_size is None:
        biggest = max(max(img.size) for img in all_images)
        image_size = SMALL_WORKING_SIZE if biggest <= SMALL_INPUT_MAX_SIDE else LARGE_WORKING_SIZE
    train_x, train_y = _to_tensors(train, image_size, channels)
    test_x, test_y = _to_tensors(test, image_size, channels)
    return ImageDataset(
        class_names=layout.class_names,
        image_size=image_size,
        channels=channels,
        train_images=train_x,
        train_labels=train_y,
        train_entries=[name for _, _, name in train],
        test_images=test_x,
        test_labels=test_y,
        test_source=layout.test_source,
        warnings=_skipped_warning(layout.skipped) + layout.warnings,
        test_entries=[name for _, _, name in test],
    )


def _decode_split(
    zf: zipfile.ZipFile,
    by_class: dict[str, list[str]],
    classes: list[str],
    limits: ArchiveLimits | None,
) -> list[tuple[Image.Image, int, str]]:
    out = []
    for label, c in enumerate(classes):
        for name in by_class[c]:
            out.append((decode_image(zf.read(name), name, limits), label, name))
    return out


def _to_tensors(
    items: list[tuple[Image.Image, int, str]], size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    mode = "RGB" if channels == 3 else "L"
    arrays = []
    for img, _, _ in items:
        img = img.convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = (
        torch.from_numpy(np.stack(arrays))
        if arrays
        else torch.zeros(0, channels, size, size, dtype=torch.uint8)
    )
    y = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
    return x, y


def _skipped_warning(skipped: list[str]) -> list[str]:
    if not skipped:
        return []
    shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    return [f"skipped {len(skipped)} file(s) that are not images in class folders: {shown}"]
