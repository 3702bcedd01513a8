"""Reading dataset zips: layouts, formats, modes, sizes, splits and clear errors."""

from __future__ import annotations

import zipfile

import pytest
import torch

from pipeline.dataset import load_dataset
from pipeline.errors import DatasetError
from pipeline.layout import inspect_zip
from tests.pipeline.zips import class_folder_files, image_bytes, write_zip

COUNTS = {"cat": 10, "dog": 5}


def test_class_folder_layout_is_split_stratified(tmp_path):
    z = write_zip(tmp_path / "d.zip", class_folder_files(COUNTS))
    ds = load_dataset(z, test_fraction=0.2, seed=0)
    assert ds.class_names == ["cat", "dog"]
    assert ds.test_source == "split"
    assert ds.train_counts() == [8, 4] and ds.test_counts() == [2, 1]
    assert ds.train_images.shape == (12, 1, 28, 28) and ds.train_images.dtype == torch.uint8


def test_explicit_train_test_layout(tmp_path):
    files = class_folder_files(COUNTS, prefix="train/")
    files |= class_folder_files({"cat": 3, "dog": 2}, prefix="test/", seed=1)
    ds = load_dataset(write_zip(tmp_path / "d.zip", files))
    assert ds.test_source == "explicit"
    assert ds.train_counts() == [10, 5] and ds.test_counts() == [3, 2]


def test_train_only_folder_is_split(tmp_path):
    ds = load_dataset(write_zip(tmp_path / "d.zip", class_folder_files(COUNTS, prefix="train/")))
    assert ds.test_source == "split" and sum(ds.test_counts()) == 3


@pytest.mark.parametrize("prefix", ["mydata/", "mydata/train/"])
def test_one_wrapping_folder_is_allowed(tmp_path, prefix):
    files = class_folder_files(COUNTS, prefix=prefix)
    if prefix.endswith("train/"):
        files |= class_folder_files(COUNTS, prefix="mydata/test/", seed=3)
    ds = load_dataset(write_zip(tmp_path / "d.zip", files))
    assert ds.class_names == ["cat", "dog"]


def test_classes_sort_naturally(tmp_path):
    files = class_folder_files({"10": 3, "2": 3, "1": 3})
    assert load_dataset(write_zip(tmp_path / "d.zip", files)).class_names == ["1", "2", "10"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_formats_and_modes(tmp_path, fmt, mode, channels):
    files = class_folder_files(COUNTS, fmt=fmt, mode=mode, size=(20, 20))
    ds = load_dataset(write_zip(tmp_path / "d.zip", files))
    assert ds.channels == channels
    assert ds.train_images.shape[1:] == (channels, 28, 28)


def test_mixed_gray_and_color_become_three_channels(tmp_path):
    files = class_folder_files({"a": 4}, mode="L") | class_folder_files({"b": 4}, mode="RGB")
    ds = load_dataset(write_zip(tmp_path / "d.zip", files))
    assert ds.channels == 3 and ds.train_images.shape[1] == 3


@pytest.mark.parametrize(
    "sizes,image_size,expected",
    [
        ([(28, 28)], None, 28),
        ([(32, 32), (10, 30)], None, 28),
        ([(100, 60)], None, 64),
        ([(28, 28)], 16, 16),
    ],
)
def test_working_resolution(tmp_path, sizes, image_size, expected):
    files = {}
    for i, size in enumerate(sizes):
        files |= class_folder_files(COUNTS, prefix=f"s{i}_", size=size, seed=i)
    files = {k.split("_", 1)[1] + str(i): v for i, (k, v) in enumerate(files.items())}
    files = {k.rsplit(".", 1)[0] + ".png": v for k, v in files.items()}
    ds = load_dataset(write_zip(tmp_path / "d.zip", files), image_size=image_size)
    assert ds.image_size == expected
    assert ds.train_images.shape[-2:] == (expected, expected)


def test_resizing_keeps_content(tmp_path):
    """A bright left half stays a bright left half after resizing 56 -> 28."""
    import io

    import numpy as np
    from PIL import Image

    a = np.zeros((56, 56), np.uint8)
    a[:, :28] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    files = {f"{c}/{i}.png": buf.getvalue() for c in ("a", "b") for i in range(3)}
    ds = load_dataset(write_zip(tmp_path / "d.zip", files), image_size=28)
    img = ds.train_images[0, 0]
    assert img[:, :13].min() == 255 and img[:, 15:].max() == 0


def test_split_is_deterministic_by_seed(tmp_path):
    z = write_zip(tmp_path / "d.zip", class_folder_files({"a": 30, "b": 30}))
    first, again, other = (inspect_zip(z, 0.2, s) for s in (7, 7, 8))
    assert first.test == again.test and first.train == again.train
    assert first.test != other.test
    for c in ("a", "b"):
        assert not set(first.test[c]) & set(first.train[c])
        assert len(first.test[c]) == 6


def test_non_images_are_skipped_and_warned(tmp_path):
    files = class_folder_files(COUNTS) | {"cat/notes.txt": b"hello", "README.md": b"x"}
    files |= {"__MACOSX/cat/._cat_000.png": b"junk", ".DS_Store": b"junk"}
    ds = load_dataset(write_zip(tmp_path / "d.zip", files))
    assert ds.train_counts() == [8, 4]
    assert len(ds.warnings) == 1 and "skipped 2 file(s)" in ds.warnings[0]


def _error(tmp_path, files) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        load_dataset(write_zip(tmp_path / "d.zip", files))
    return info.value


def test_not_a_zip(tmp_path):
    path = tmp_path / "d.zip"
    path.write_bytes(b"definitely not a zip")
    with pytest.raises(DatasetError, match="not a readable zip") as info:
        load_dataset(path)
    assert info.value.rule == "not_a_zip"


def test_no_images(tmp_path):
    assert _error(tmp_path, {"a/readme.txt": b"x"}).rule == "no_images"


def test_one_class_is_not_enough(tmp_path):
    err = _error(tmp_path, class_folder_files({"only": 5}))
    assert err.rule == "too_few_classes" and "at least 2" in str(err)


def test_class_without_test_images(tmp_path):
    files = class_folder_files(COUNTS, prefix="train/") | class_folder_files(
        {"cat": 2}, prefix="test/"
    )
    err = _error(tmp_path, files)
    assert err.rule == "class_without_test" and "test/dog/" in str(err)


def test_single_image_class_cannot_be_split(tmp_path):
    err = _error(tmp_path, class_folder_files({"a": 5, "b": 1}))
    assert err.rule == "class_without_test" and "'b'" in str(err)


def test_corrupt_image_names_the_entry(tmp_path):
    files = class_folder_files(COUNTS) | {"dog/broken.png": b"\x89PNG\r\n\x1a\nnope"}
    err = _error(tmp_path, files)
    assert err.rule == "corrupt_image" and err.entry == "dog/broken.png"


def test_wrong_format_behind_image_suffix(tmp_path):
    import numpy as np

    gif = image_bytes(0, np.random.default_rng(0), fmt="GIF")
    err = _error(tmp_path, class_folder_files(COUNTS) | {"cat/x.png": gif})
    assert err.rule == "image_format" and "GIF" in str(err)


def test_zip_is_read_not_extracted(tmp_path):
    z = write_zip(tmp_path / "d.zip", class_folder_files(COUNTS))
    before = set(tmp_path.rglob("*"))
    load_dataset(z)
    assert set(tmp_path.rglob("*")) == before
    assert zipfile.is_zipfile(z)


def test_limits_given_by_the_caller_apply(tmp_path):
    """The worker passes the service's configured limits; they, not the defaults, decide."""
    from pipeline.archive import ArchiveLimits

    z = write_zip(tmp_path / "d.zip", class_folder_files(COUNTS, size=(20, 20)))
    assert load_dataset(z).train_counts() == [8, 4]
    with pytest.raises(DatasetError) as info:
        load_dataset(z, limits=ArchiveLimits(max_image_pixels=399))
    assert info.value.rule == "image_too_large"
    with pytest.raises(DatasetError) as info:
        load_dataset(z, limits=ArchiveLimits(max_entries=5))
    assert info.value.rule == "too_many_entries"
