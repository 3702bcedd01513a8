"""Builders for small labeled-image zips in any layout, format, mode and size."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def image_bytes(
    label: int, rng: np.random.Generator, size=(16, 16), mode: str = "L", fmt: str = "PNG"
) -> bytes:
    """A noisy image whose bright bar position depends on the label (learnable, not trivial)."""
    w, h = size
    a = rng.integers(0, 50, (h, w, 3)).astype(np.uint8)
    x0 = (label * w // 4) % max(w - 3, 1)
    a[:, x0 : x0 + 3] = 220 if mode == "L" else [220, 60 * label % 255, 40]
    img = Image.fromarray(a, "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def class_folder_files(
    counts: dict[str, int], prefix: str = "", seed: int = 0, **image_kw
) -> dict[str, bytes]:
    """{prefix}<class>/<class>_<i>.<ext> for each class."""
    rng = np.random.default_rng(seed)
    ext = {"PNG": "png", "JPEG": "jpg", "BMP": "bmp"}[image_kw.get("fmt", "PNG")]
    return {
        f"{prefix}{c}/{c}_{i:03d}.{ext}": image_bytes(label, rng, **image_kw)
        for label, (c, n) in enumerate(counts.items())
        for i in range(n)
    }
