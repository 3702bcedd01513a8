"""The CSV labels layout (pipeline/csv_labels.py) as the CLI and the service read it: rows
place images in classes and splits; every wrong row is named by its line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import DatasetError
from pipeline.layout import check_upload, inspect_zip
from tests.service.datasets import CLASS_SIZES, make_csv_zip, png


def test_rows_make_the_classes_and_the_split(tmp_path: Path) -> None:
    layout = check_upload(make_csv_zip(tmp_path / "d.zip", test_per_class=3, unnamed=1))
    assert layout.source == "csv" and layout.test_source == "explicit"
    assert {c: len(v) for c, v in layout.test.items()} == dict.fromkeys(CLASS_SIZES, 3)
    assert {c: len(v) + 3 for c, v in layout.train.items()} == CLASS_SIZES
    assert layout.warnings == [
        "1 image(s) in the zip are named by no row of labels.csv and were skipped: "
        "images/unnamed_0.png"
    ]
    assert len(layout.headers) == sum(CLASS_SIZES.values()) + 1


def test_without_a_split_column_a_split_is_made(tmp_path: Path) -> None:
    layout = inspect_zip(make_csv_zip(tmp_path / "d.zip"), test_fraction=0.2)
    assert layout.test_source == "split"
    assert sum(map(len, layout.test.values())) == 6 + 2 + 2  # 20 % of 30, 12 and 9


def test_labels_csv_in_a_wrapping_folder(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(path, "w") as zf:
        rows = ["file,label"]
        for cls in ("a", "b"):
            for i in range(3):
                zf.writestr(
                    f"top/img/{cls}{i}.png",
                    png("circle", np.random.default_rng(i)),
                )
                rows.append(f"img/{cls}{i}.png,{cls}")
        zf.writestr("top/labels.csv", "\n".join(rows))
    layout = inspect_zip(path)
    assert layout.class_names == ["a", "b"]
    assert layout.train["a"][0].startswith("top/img/")


@pytest.mark.parametrize(
    ("content", "rule", "entry"),
    [
        ("name,class\n", "csv_header", "labels.csv"),
        ("file,label,split\nimages/0000.png,circle,validation\n", "csv_bad_split", "labels.csv:2"),
        ("file,label\nimages/0000.png,a\tb\n", "csv_bad_label", "labels.csv:2"),
        (b"file,label\n\xff\xfe\n", "csv_encoding", "labels.csv"),
        ("file,label\nimages/0000.png,only\nimages/0001.png,only\n", "too_few_classes", None),
    ],
)
def test_bad_labels_files(
    tmp_path: Path, content: str | bytes, rule: str, entry: str | None
) -> None:
    replaced = make_csv_zip(tmp_path / "d.zip", labels=content)
    with pytest.raises(DatasetError) as refused:
        check_upload(replaced)
    assert refused.value.rule == rule and refused.value.entry == entry, refused.value
