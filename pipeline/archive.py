"""Reading a dataset zip: listing its entries and decoding its images.

The only module that opens the uploaded archive. Entries are read by their ZipInfo, never
extracted to a path named by the upload.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from pipeline.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Pillow format names accepted after decoding (the suffix alone proves nothing).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")
MAX_IMAGE_PIXELS = 4096 * 4096  # per image; larger ones are refused, not resized


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open the upload as a zip, or raise DatasetError(rule="not_a_zip")."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(
            f"the upload is not a readable zip archive ({exc})", rule="not_a_zip"
        ) from exc


def file_entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The archive's file entries in archive order, without folders and macOS/hidden clutter."""
    entries = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = info.filename.split("/")
        if parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
            continue
        entries.append(info)
    return entries


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_image(data: bytes, entry: str) -> Image.Image:
    """Fully decode one image and convert it to 'L' (grayscale) or 'RGB'."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in IMAGE_FORMATS:
                raise DatasetError(
                    f"{entry}: format {img.format} is not accepted (use PNG, JPEG or BMP)",
                    rule="image_format",
                    entry=entry,
                )
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise DatasetError(
                    f"{entry}: {img.width}x{img.height} pixels is over the limit of "
                    f"{MAX_IMAGE_PIXELS} pixels per image",
                    rule="image_too_large",
                    entry=entry,
                )
            img.load()
            return img.convert("L" if _is_grayscale_mode(img.mode) else "RGB")
    except DatasetError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise DatasetError(
            f"{entry}: cannot decode the image ({exc})", rule="corrupt_image", entry=entry
        ) from exc


def _is_grayscale_mode(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "I;16", "F")
