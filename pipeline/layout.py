"""Which zip entries are which class's training and test images: structure only, no decoding.

Imports no torch, so the HTTP layer can check an upload's structure cheaply.

Accepted layouts (one wrapping top-level folder is allowed around each):
  <class>/<image>                          -> a stratified test split is made (test_source="split")
  train/<class>/<image> [test/<class>/...] -> test/ is the held-out set (test_source="explicit");
                                              without test/, a split is made from train/
  labels.csv + images                      -> rows `file,label[,split]` (pipeline/csv_labels.py);
                                              rows with split=test are the held-out set
"""

from __future__ import annotations

import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.archive import (
    ArchiveLimits,
    CheckedZipFile,
    ImageHeader,
    file_entries,
    is_image_name,
    open_zip,
    scan_entries,
)
from pipeline.csv_labels import find_labels, read_csv_layout
from pipeline.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass
class DatasetLayout:
    """Which zip entries are training and test images of which class (nothing decoded yet)."""

    class_names: list[str]
    train: dict[str, list[str]]  # class -> entry names
    test: dict[str, list[str]]  # class -> entry names (empty lists until split for "split")
    test_source: str  # "explicit" | "split"
    skipped: list[str] = field(default_factory=list)  # entries that are not images
    source: str = "folders"  # "folders" (class folders) | "csv" (labels.csv)
    warnings: list[str] = field(default_factory=list)  # e.g. images no labels.csv row names
    # Each image's header (size, mode), where check_upload read them.
    headers: dict[str, ImageHeader] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "classes": {
                c: {"train": len(self.train[c]), "test": len(self.test[c])}
                for c in self.class_names
            },
            "test_source": self.test_source,
            "source": self.source,
            "skipped": len(self.skipped),
        }


def natural_key(name: str) -> list:
    """Sort "2" before "10": digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def inspect_zip(
    path: Path, test_fraction: float = 0.2, seed: int = 0, limits: ArchiveLimits | None = None
) -> DatasetLayout:
    """Cheap structural checks (no image decoding); raises DatasetError naming the problem."""
    with open_zip(path, limits) as zf:
        return _layout_of(zf, file_entries(zf), test_fraction, seed)


def check_upload(
    path: Path, test_fraction: float = 0.2, seed: int = 0, limits: ArchiveLimits | None = None
) -> DatasetLayout:
    """The upload-time check: the zip's structure (before anything is decompressed), its class
    layout, then one capped read of every entry (sizes, CRCs, no nested archives) with each
    image's header checked (format, pixel count, frames, not empty). Images are decoded
    later, by the job. Whatever zipfile raises on hostile bytes is a DatasetError too
    (rule "unreadable_archive"), logged with its traceback."""
    try:
        with open_zip(path, limits) as zf:
            entries = file_entries(zf)
            layout = _layout_of(zf, entries, test_fraction, seed)
            layout.headers = scan_entries(zf, entries, limits)
    except DatasetError:
        raise
    except Exception as exc:
        log.exception("unexpected error checking the upload %s", path)
        raise DatasetError(
            f"the zip archive cannot be read ({type(exc).__name__}: {exc})",
            rule="unreadable_archive",
        ) from exc
    return layout


def _layout_of(
    zf: CheckedZipFile, entries: list[zipfile.ZipInfo], test_fraction: float, seed: int
) -> DatasetLayout:
    """The CSV layout where the zip has a labels.csv, else the class-folder layouts."""
    names = [e.filename for e in entries]
    csv_entry = find_labels(names)
    if csv_entry is None:
        return _layout(entries, test_fraction, seed)
    found = read_csv_layout(zf.read(csv_entry), csv_entry, names)
    others = [n for n in names if n != csv_entry and not is_image_name(n)]
    layout = _checked_layout(found.train, found.test, found.explicit, others, csv_entry)
    layout.source, layout.warnings = "csv", found.warnings
    if layout.test_source == "split":
        _split(layout, test_fraction, seed)
    return layout


def _layout(entries: list[zipfile.ZipInfo], test_fraction: float, seed: int) -> DatasetLayout:
    names = [e.filename for e in entries]
    images = [n for n in names if is_image_name(n)]
    skipped = [n for n in names if not is_image_name(n)]
    if not images:
        raise DatasetError(
            "the zip contains no images (expected PNG, JPEG or BMP files in class folders)",
            rule="no_images",
        )
    parts = [n.split("/") for n in images]
    wrapper = _wrapping_folder(parts)
    if wrapper:
        parts = [p[1:] for p in parts]
    explicit = any(p[0].lower() == "train" for p in parts)
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for name, p in zip(images, parts, strict=True):
        if explicit:
            split = p[0].lower()
            if split not in ("train", "test") or len(p) < 3:
                skipped.append(name)
                continue
            (train if split == "train" else test).setdefault(p[1], []).append(name)
        elif len(p) < 2:
            skipped.append(name)  # an image outside any class folder
        else:
            train.setdefault(p[0], []).append(name)
    layout = _checked_layout(train, test, explicit, skipped)
    if layout.test_source == "split":
        _split(layout, test_fraction, seed)
    return layout


def _wrapping_folder(parts: list[list[str]]) -> bool:
    """True when every image sits under one shared top folder that is not train/ or test/."""
    tops = {p[0] for p in parts}
    return (
        len(tops) == 1
        and all(len(p) >= 3 for p in parts)
        and parts[0][0].lower() not in ("train", "test")
    )


def _checked_layout(
    train: dict, test: dict, explicit: bool, skipped: list[str], csv_entry: str | None = None
) -> DatasetLayout:
    """The class checks of every layout; `csv_entry` names labels.csv in the CSV layout."""
    classes = sorted(train, key=natural_key)
    if len(classes) < 2:
        where = "train/" if explicit else "the top level"
        found = f"found {len(classes)} class folder(s) with images under {where}"
        if csv_entry:
            found = f"{csv_entry} names {len(classes)} label(s) of training images"
        raise DatasetError(f"{found}; at least 2 classes are needed", rule="too_few_classes")
    for c in sorted(set(test) - set(train), key=natural_key):
        text = f"test/{c}/ has images but train/{c}/ does not"
        if csv_entry:
            text = f"label {c!r} has rows with split=test but none with split=train"
        raise DatasetError(
            f"{text}; every test class needs training images",
            rule="class_without_train",
            entry=csv_entry or f"test/{c}/",
        )
    has_test = explicit and bool(test)
    if has_test:
        for c in classes:
            if not test.get(c):
                where = f"rows with split=test in {csv_entry}" if csv_entry else f"test/{c}/"
                raise DatasetError(
                    f"class {c!r} has no test image: add images under {where}",
                    rule="class_without_test",
                    entry=csv_entry or f"test/{c}/",
                )
    else:
        for c in classes:
            if len(train[c]) < 2:
                explicit_test = "split=test rows" if csv_entry else "an explicit test/ folder"
                raise DatasetError(
                    f"class {c!r} has {len(train[c])} image; at least 2 are needed to hold one out "
                    f"for testing (or give {explicit_test})",
                    rule="class_without_test",
                    entry=csv_entry or f"{c}/",
                )
    return DatasetLayout(
        class_names=classes,
        train={c: sorted(train[c]) for c in classes},
        test={c: sorted(test.get(c, [])) for c in classes},
        test_source="explicit" if has_test else "split",
        skipped=skipped,
    )


def _split(layout: DatasetLayout, test_fraction: float, seed: int) -> None:
    """Stratified split, deterministic in (seed, entry names): same zip + seed, same split."""
    rng = np.random.default_rng(seed)
    for c in layout.class_names:
        names = layout.train[c]
        n_test = min(max(1, round(len(names) * test_fraction)), len(names) - 1)
        order = rng.permutation(len(names))
        layout.test[c] = sorted(names[i] for i in order[:n_test])
        layout.train[c] = sorted(names[i] for i in order[n_test:])
