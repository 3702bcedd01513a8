# ruff: noqa: E501  (the case tables read best as one case per line)
"""pipeline.archive's rules, called directly: every hostile zip of the catalogue, the image
checks the worker runs, and the legitimate zips that must still pass."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from jobs.settings import Settings
from pipeline.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    check_image_header,
    check_name,
    decode_image,
    file_entries,
    open_zip,
)
from pipeline.errors import DatasetError, escape_name
from pipeline.layout import check_upload
from tests.hardening.conftest import LIMITS
from tests.hardening.hostile import (
    HTML,
    IMAGE_HEADER_CASES,
    SVG,
    apng,
    jpeg,
    make_zip,
    multipage_tiff,
    other_format,
    png,
    png_header_bomb,
    upload_cases,
    valid_entries,
)

CASES = upload_cases()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_upload_check_refuses(tmp_path: Path, case) -> None:  # noqa: ANN001
    with pytest.raises(DatasetError) as info:
        check_upload(_write(tmp_path, case.data), limits=LIMITS)
    assert (info.value.rule, info.value.entry) == (case.rule, case.entry), str(info.value)
    assert str(info.value).endswith(f"[rule: {case.rule}]")


STRUCTURAL = {c.id for c in CASES} - IMAGE_HEADER_CASES - {
    "zip_named_png", "gzip_named_png", "polyglot_png_zip", "cd_understates_size",
    "cd_overstates_size", "crc_mismatch",
}  # fmt: skip


@pytest.mark.parametrize("case", [c for c in CASES if c.id in STRUCTURAL], ids=lambda c: c.id)
def test_structural_rules_need_no_decompression(tmp_path: Path, case) -> None:  # noqa: ANN001
    """open_zip alone (central directory and local headers) refuses these."""
    with pytest.raises(DatasetError) as info:
        open_zip(_write(tmp_path, case.data), LIMITS).close()
    assert info.value.rule == case.rule


def _sized_jpeg(width: int, height: int) -> bytes:
    data = bytearray(jpeg())
    at = data.index(b"\xff\xc0")  # baseline start-of-frame: length, precision, height, width
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _bmp_header(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 16, 0, 0, 0, 0)
    return header + info + b"\0" * 16


BIG = ArchiveLimits(max_image_pixels=10**10)  # Pillow's own bomb checks come first
IMAGE_CASES = [
    ("pixel_cap_png", png_header_bomb(2000, 2000), LIMITS, "image_too_large"),
    ("pixel_cap_bmp_header", _bmp_header(3000, 3000), LIMITS, "image_too_large"),
    ("pillow_bomb_warning", png_header_bomb(10_000, 10_000), BIG, "decompression_bomb"),
    ("pillow_bomb_error", png_header_bomb(50_000, 50_000), BIG, "decompression_bomb"),
    ("jpeg_bomb_dimensions", _sized_jpeg(65_000, 65_000), BIG, "decompression_bomb"),
    ("png_bomb_default_limits", png_header_bomb(50_000, 50_000), DEFAULT_LIMITS, "decompression_bomb"),
    ("truncated_png", png(size=(64, 64))[:300], LIMITS, "truncated_image"),
    ("png_without_end", png()[:-12], LIMITS, "truncated_image"),
    ("truncated_jpeg", jpeg()[:400], LIMITS, "truncated_image"),
    ("corrupt_jpeg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, LIMITS, "corrupt_image"),
    ("corrupt_png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, LIMITS, "corrupt_image"),
    ("text_as_png", b"this is not a png at all", LIMITS, "corrupt_image"),
    ("gif_as_png", other_format("GIF"), LIMITS, "image_format"),
    ("webp_as_png", other_format("WEBP"), LIMITS, "image_format"),
    ("tiff_as_png", other_format("TIFF"), LIMITS, "image_format"),
    ("ico_as_png", other_format("ICO"), LIMITS, "image_format"),
    ("pdf_as_png", other_format("PDF"), LIMITS, "image_format"),
    ("svg_as_png", SVG, LIMITS, "image_format"),
    ("html_as_png", HTML, LIMITS, "image_format"),
    ("apng", apng(), LIMITS, "multi_frame"),
    ("multipage_tiff", multipage_tiff(), LIMITS, "image_format"),
    ("empty_file", b"", LIMITS, "empty_file"),
    ("png_html_polyglot", png() + b"<script>alert(1)</script>", LIMITS, "trailing_data"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "limits", "rule"), [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES]
)
def test_decode_image_refuses(data: bytes, limits: ArchiveLimits, rule: str) -> None:  # fmt: skip
    filters = list(warnings.filters)
    with pytest.raises(DatasetError) as info:
        decode_image(data, "cls/x\n.png", limits)
    assert info.value.rule == rule, str(info.value)
    assert info.value.entry == "cls/x\\n.png"
    assert "entry 'cls/x\\n.png'" in str(info.value)
    assert warnings.filters == filters, "the warning filter leaked"


# Their headers are intact: only the full decode (the worker's) finds what is wrong.
DECODE_ONLY = {"truncated_png", "png_without_end", "png_html_polyglot"}


@pytest.mark.parametrize(
    ("name", "data", "limits", "rule"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES]
)
def test_header_check_refuses_what_the_header_shows(
    name: str, data: bytes, limits: ArchiveLimits, rule: str
) -> None:
    """The upload-time check (no pixels decoded) refuses with the worker's rule and entry,
    except for bodies broken past an intact header."""
    if name in DECODE_ONLY:
        check_image_header(data, "cls/x.png", limits)
        return
    with pytest.raises(DatasetError) as info:
        check_image_header(data, "cls/x.png", limits)
    assert (info.value.rule, info.value.entry) == (rule, "cls/x.png"), str(info.value)


def test_header_check_decodes_no_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*_: object) -> None:
        raise AssertionError("the header check decoded pixels")

    files = {}
    for fmt in ("PNG", "JPEG", "BMP"):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30)).save(buf, fmt)
        files[f"a/x.{fmt.lower()}"] = buf.getvalue()
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for name, data in files.items():
        check_image_header(data, name, LIMITS)


FORMAT_MODES = [(f, m) for f in ("PNG", "BMP") for m in ("L", "RGB", "RGBA", "P", "1")]
FORMAT_MODES += [("JPEG", "L"), ("JPEG", "RGB"), ("JPEG", "CMYK")]


@pytest.mark.parametrize(("fmt", "mode"), FORMAT_MODES)
def test_decode_image_accepts_the_allowed_formats(fmt: str, mode: str) -> None:
    buf = io.BytesIO()
    Image.new(mode, (20, 10)).save(buf, fmt)
    img = decode_image(buf.getvalue(), "a/x", LIMITS)
    assert img.size == (20, 10) and img.mode in ("L", "RGB")


def test_truncated_images_are_never_loaded_leniently(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        decode_image(png(), "a/x.png")


@pytest.mark.parametrize(
    "name",
    [
        "cat/x.png",
        "train/Ünïcode class/äö 1.jpg",
        "a/b/c/d.png",
        "dir/",
        "a/..b/x..png",
        "日本/猫.png",
    ],
)
def test_ordinary_names_pass(name: str) -> None:
    check_name(name, LIMITS)


def test_escape_name_shows_what_is_hidden() -> None:
    assert escape_name("a/b.png") == "a/b.png"
    assert escape_name("a\x00b\n\u202ec\\d") == "a\\x00b\\n\\u202ec\\\\d"
    assert escape_name("café/猫 x.png") == "café/猫 x.png"


def _zip_to_stream(entries: list[tuple[str, bytes]]) -> bytes:
    """Written to an unseekable stream: sizes in data descriptors after each entry."""

    class Unseekable(io.RawIOBase):
        def __init__(self) -> None:
            self.buf = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: bytes) -> int:
            self.buf += b
            return len(b)

    out = Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            with zf.open(name, "w") as f:
                f.write(data)
    return bytes(out.buf)


LEGIT = {
    "deflated": lambda: make_zip(valid_entries(), zipfile.ZIP_DEFLATED),
    "data_descriptors": lambda: _zip_to_stream(valid_entries()),
    "with_folders_and_clutter": lambda: make_zip(
        [("a/", b""), ("b/", b""), *valid_entries(), ("__MACOSX/a/._a_0.png", b"\0\5\26\7"),
         (".DS_Store", b"\0\0\0\1Bud1"), ("a/notes.txt", b"hello")]
    ),  # fmt: skip
    "wrapped_in_a_folder": lambda: make_zip(valid_entries("dataset/")),
    "self_extracting_prefix": lambda: b"#!/bin/sh\nexit 0\n" + b"\0" * 100 + make_zip(valid_entries()),
    "zip64": lambda: _zip64(valid_entries()),
}  # fmt: skip


def _zip64(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries:
            with zf.open(name, "w", force_zip64=True) as f:
                f.write(data)
    return buf.getvalue()


@pytest.mark.parametrize("make", LEGIT.values(), ids=LEGIT.keys())
def test_legitimate_zips_pass(tmp_path: Path, make) -> None:  # noqa: ANN001
    path = _write(tmp_path, make())
    layout = check_upload(path, limits=LIMITS)
    assert layout.class_names == ["a", "b"]
    with open_zip(path, LIMITS) as zf:
        for info in file_entries(zf):
            if info.filename.endswith(".png"):
                decode_image(zf.read(info.filename), info.filename, LIMITS)


def test_reads_are_capped_even_for_zipfile_callers(tmp_path: Path) -> None:
    """open_zip's ZipFile checks size, CRC and nested archives on every read(), so the
    pipeline's own readers (dataset, packaging) get the same checks."""
    case = next(c for c in CASES if c.id == "cd_understates_size")
    with open_zip(_write(tmp_path, case.data), LIMITS) as zf, pytest.raises(DatasetError) as info:
        zf.read("a/first.png")
    assert info.value.rule == "size_mismatch"


def test_settings_wire_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().archive_limits() == ArchiveLimits()
    monkeypatch.setenv("BALANCER_ZIP_MAX_ENTRIES", "7")
    monkeypatch.setenv("BALANCER_ZIP_MAX_RATIO", "12.5")
    monkeypatch.setenv("BALANCER_IMAGE_MAX_PIXELS", "100")
    limits = Settings().archive_limits()
    assert (limits.max_entries, limits.max_ratio, limits.max_image_pixels) == (7, 12.5, 100)
    with pytest.raises(AttributeError):
        limits.max_entries = 8  # type: ignore[misc]  # frozen
