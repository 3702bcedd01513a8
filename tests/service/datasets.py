"""Tiny labeled image zips made on the fly: no downloads, a few KB each."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

# An imbalanced dataset: "circle" is the majority, the other two get GAN images.
CLASS_SIZES = {"circle": 30, "square": 12, "stripe": 9}


def png(pattern: str, rng: np.random.Generator, size: int = 16) -> bytes:
    """A noisy 16x16 grayscale image whose shape depends on the class."""
    img = rng.integers(0, 60, (size, size)).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    if pattern == "circle":
        img[(yy - 8) ** 2 + (xx - 8) ** 2 < 25] = 230
    elif pattern == "square":
        img[4:12, 4:12] = 230
    else:
        img[:, ::4] = 230
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, sizes: dict[str, int] = CLASS_SIZES, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for cls, n in sizes.items():
            for i in range(n):
                zf.writestr(f"{cls}/{cls}_{i:03d}.png", png(cls, rng))
    return path


def make_corrupt_image_zip(path: Path) -> Path:
    """Right layout, but one PNG is cut short after its header: it passes the upload's header
    check and fails the job's full decode."""
    make_zip(path)
    truncated = png("square", np.random.default_rng(1), size=64)[:200]
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("square/broken.png", truncated)
    return path


def make_one_class_zip(path: Path) -> Path:
    return make_zip(path, {"circle": 10})


def make_csv_zip(
    path: Path,
    sizes: dict[str, int] = CLASS_SIZES,
    test_per_class: int = 0,
    extra_rows: tuple[str, ...] = (),
    unnamed: int = 0,
    seed: int = 0,
    labels: str | bytes | None = None,
) -> Path:
    """images/NNN.png and labels.csv (`file,label[,split]`): the first `test_per_class` images
    of each class get split=test (no split column when 0); `extra_rows` are appended as
    written; `unnamed` more images are in the zip but in no row; `labels` replaces the file."""
    rng = np.random.default_rng(seed)
    rows = ["file,label,split" if test_per_class else "file,label"]
    n = 0
    with zipfile.ZipFile(path, "w") as zf:
        for cls, count in sizes.items():
            for i in range(count):
                name = f"images/{n:04d}.png"
                zf.writestr(name, png(cls, rng))
                split = ("test" if i < test_per_class else "train") if test_per_class else None
                rows.append(f"{name},{cls}" + (f",{split}" if split else ""))
                n += 1
        for i in range(unnamed):
            zf.writestr(f"images/unnamed_{i}.png", png("circle", rng))
        text = "\n".join([*rows, *extra_rows]) + "\n"
        zf.writestr("labels.csv", text if labels is None else labels)
    return path
