"""Outputs: the balanced dataset zip (real originals + synthetic PNGs) and the sample grid."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageDraw

from pipeline.archive import ArchiveLimits, open_zip
from pipeline.balance import Balanced
from pipeline.dataset import ImageDataset


def write_balanced_zip(
    path: Path,
    source_zip: Path,
    dataset: ImageDataset,
    balanced: Balanced,
    limits: ArchiveLimits | None = None,
) -> dict[str, int]:
    """Write `<class>/<file>` for every training image plus manifest.csv; returns counts per class.

    Real images are copied byte for byte from the upload (origin "real"); the repeated real
    images that fill part of a class are copied again as oversampled_NNNNN_<file> (origin
    "oversampled", `source` names the real file); generated ones are PNGs named
    synthetic_NNNNN.png (origin "synthetic"). Test images are not included.
    """
    counts: dict[str, int] = {}
    manifest = io.StringIO()
    rows = csv.writer(manifest, lineterminator="\n")
    rows.writerow(["file", "class", "origin", "source"])
    used: set[str] = set()
    real_name: dict[int, str] = {}
    with (
        open_zip(source_zip, limits) as src,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for entry, label in zip(dataset.train_entries, dataset.train_labels.tolist(), strict=True):
            cls = dataset.class_names[label]
            name = _unique(f"{cls}/{PurePosixPath(entry).name}", used)
            out.writestr(name, src.read(entry))
            rows.writerow([name, cls, "real", ""])
            real_name[len(real_name)] = name
            counts[cls] = counts.get(cls, 0) + 1
        for label, picks in balanced.copies.items():
            cls = dataset.class_names[label]
            for i, index in enumerate(picks.tolist()):
                entry = dataset.train_entries[index]
                name = _unique(f"{cls}/oversampled_{i:05d}_{PurePosixPath(entry).name}", used)
                out.writestr(name, src.read(entry))
                rows.writerow([name, cls, "oversampled", real_name[index]])
                counts[cls] = counts.get(cls, 0) + 1
        for label, images in balanced.synthetic.items():
            cls = dataset.class_names[label]
            for i, img in enumerate(images):
                name = _unique(f"{cls}/synthetic_{i:05d}.png", used)
                out.writestr(name, png_bytes(img))
                rows.writerow([name, cls, "synthetic", ""])
                counts[cls] = counts.get(cls, 0) + 1
        out.writestr("manifest.csv", manifest.getvalue())
    return counts


def _unique(name: str, used: set[str]) -> str:
    """Keep names unique (two class sub-folders may hold the same file name)."""
    stem, dot, ext = name.rpartition(".")
    candidate, n = name, 1
    while candidate.lower() in used:
        candidate = f"{stem}_{n}{dot}{ext}" if dot else f"{name}_{n}"
        n += 1
    used.add(candidate.lower())
    return candidate


def to_pil(img: torch.Tensor) -> Image.Image:
    """uint8 [C, S, S] -> PIL image (L or RGB)."""
    a = img.numpy()
    return Image.fromarray(a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0)))


def png_bytes(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    to_pil(img).save(buf, format="PNG")
    return buf.getvalue()


def write_samples_png(
    path: Path,
    dataset: ImageDataset,
    synthetic: dict[int, torch.Tensor],
    per_row: int = 10,
    cell: int = 56,
) -> None:
    """A grid with two rows per minority class: real training images, then generated ones."""
    label_w, pad = 120, 4
    rows = []
    for label, fakes in synthetic.items():
        rows.append((label, "real", dataset.train_images[dataset.train_labels == label]))
        rows.append((label, "generated" if len(fakes) else "none generated", fakes))
    height = max(len(rows), 1) * (cell + pad) + pad
    grid = Image.new("RGB", (label_w + per_row * (cell + pad) + pad, height), "white")
    draw = ImageDraw.Draw(grid)
    for r, (label, kind, images) in enumerate(rows):
        y = pad + r * (cell + pad)
        draw.text(
            (pad, y + cell // 2 - 12), f"class {dataset.class_names[label]}"[:18], fill="black"
        )
        draw.text((pad, y + cell // 2 + 2), kind, fill="gray")
        for i, img in enumerate(images[:per_row]):
            tile = to_pil(img).convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(tile, (label_w + pad + i * (cell + pad), y))
    if not rows:
        draw.text((pad, pad), "no minority classes: nothing was generated", fill="black")
    grid.save(path, format="PNG")
