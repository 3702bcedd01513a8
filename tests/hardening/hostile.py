# ruff: noqa: E501  (the catalogue reads best as one case per line)
"""Hostile and broken inputs, made in memory: zips with dangerous names, bombs, lies in the
central directory, and images that are not what their names say. No downloads, a few KB each.

Raw edits keep every offset valid: names are swapped for placeholders of the same length, and
header fields are patched in place, in the local header and/or the central directory record.
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

Entry = tuple[str, bytes] | tuple[str, bytes, int]  # (name, data[, compression method])


# --- images --------------------------------------------------------------------------------


def png(seed: int = 0, size: tuple[int, int] = (16, 16), mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0]), dtype=np.uint8), "L")
    return _save(img.convert(mode), "PNG")


def jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return _save(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)), "JPEG")


def other_format(fmt: str, **save: object) -> bytes:
    return _save(Image.new("RGB", (8, 8), (200, 30, 30)), fmt, **save)


def apng() -> bytes:
    frames = [Image.new("L", (8, 8), v) for v in (0, 255)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:])


def multipage_tiff() -> bytes:
    pages = [Image.new("L", (8, 8), v) for v in (0, 255)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height 1-bit pixels, with a few bytes of data: the
    file is tiny, the decoded image would not be."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _save(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


# --- zips ----------------------------------------------------------------------------------


def valid_entries(prefix: str = "") -> list[Entry]:
    """A small, valid two-class dataset: the hostile part is added to it."""
    return [
        (f"{prefix}{c}/{c}_{i}.png", png(seed=10 * k + i))
        for k, c in enumerate("ab")
        for i in range(3)
    ]


def make_zip(entries: Iterable[Entry], method: int = zipfile.ZIP_STORED) -> bytes:
    """A zip of (name, data[, method]) entries, written exactly as named."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": on purpose
        for name, data, *own in entries:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = own[0] if own else method
            zf.writestr(info, data)
    return buf.getvalue()


def with_dataset(*extra: Entry) -> bytes:
    """The valid dataset plus `extra` entries."""
    return make_zip([*valid_entries(), *extra])


def rename(data: bytes, placeholder: str, real: bytes) -> bytes:
    """Swap an entry's name for raw bytes of the same length (NUL, control characters)."""
    old = placeholder.encode()
    assert len(old) == len(real) and data.count(old) == 2, "placeholder must be unique"
    return data.replace(old, real)


@dataclass
class Record:
    """Where one entry's local header and central directory record are."""

    name: str
    local: int
    central: int


def records(data: bytes) -> dict[str, Record]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        start = zf.start_dir
    out, pos = {}, start
    for info in infos:
        n, m, k = struct.unpack("<3H", data[pos + 28 : pos + 34])
        out[info.orig_filename] = Record(info.orig_filename, info.header_offset, pos)
        pos += 46 + n + m + k
    return out


# Offsets of fields in the local header / the central directory record.
LOCAL = {"flags": 6, "method": 8, "crc": 14, "compress_size": 18, "file_size": 22}
CENTRAL = {
    "flags": 8, "method": 10, "crc": 16, "compress_size": 20, "file_size": 24,
    "external_attr": 38, "header_offset": 42,
}  # fmt: skip
WIDTH = {"flags": "<H", "method": "<H"}


def patch(data: bytes, name: str, where: str = "both", **fields: int) -> bytes:
    """Overwrite header fields of one entry: in the local header, the central record or both."""
    rec = records(data)[name]
    out = bytearray(data)
    for field, value in fields.items():
        fmt = WIDTH.get(field, "<I")
        if where in ("both", "local") and field in LOCAL:
            struct.pack_into(fmt, out, rec.local + LOCAL[field], value)
        if where in ("both", "central"):
            struct.pack_into(fmt, out, rec.central + CENTRAL[field], value)
    return bytes(out)


def info_of(data: bytes, name: str) -> zipfile.ZipInfo:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.getinfo(name)


SYMLINK_ATTR = (stat.S_IFLNK | 0o777) << 16
FIFO_ATTR = (stat.S_IFIFO | 0o644) << 16


# --- the catalogue -------------------------------------------------------------------------


@dataclass
class Case:
    """A hostile upload and the refusal it must get: `rule`, and `entry` as the API shows it
    (escaped) or None when the refusal is about the whole archive."""

    id: str
    data: bytes
    rule: str
    entry: str | None


def _random(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _two(method: int = zipfile.ZIP_STORED) -> bytes:
    """a/a_0.png and b/b_0.png first, so raw patches can target them, then the dataset."""
    return make_zip([("a/first.png", png(1)), ("b/second.png", png(2)), *valid_entries()], method)


def _overlap_by_size() -> bytes:
    """Fifield's overlap: a/first.png's compressed bytes run on over b/second.png's header."""
    data = _two()
    recs = records(data)
    span = recs["b/second.png"].local + 40 - recs["a/first.png"].local
    return patch(data, "a/first.png", where="central", compress_size=span)


def _overlap_shared_header() -> bytes:
    """Two central directory records pointing at one local header."""
    data = _two()
    return patch(
        data, "b/second.png", where="central", header_offset=records(data)["a/first.png"].local
    )


def _size_lie(factor: float) -> bytes:
    data = _two(zipfile.ZIP_DEFLATED)
    size = info_of(data, "a/first.png").file_size
    return patch(data, "a/first.png", file_size=int(size * factor))


def _bad_local_name() -> bytes:
    data = _two()
    at = records(data)["a/first.png"].local + 30
    return data[:at] + b"a/other.png" + data[at + len("a/other.png") :]


def _nul_name() -> bytes:
    return rename(with_dataset(("a/evilX.png", png(9))), "a/evilX.png", b"a/evil\x00.png")


def _control_name(char: bytes) -> bytes:
    name = b"a/x" + char + b".png"
    return rename(
        with_dataset((f"a/x{'Q' * len(char)}.png", png(9))), f"a/x{'Q' * len(char)}.png", name
    )


def _invalid_utf8_name() -> bytes:
    data = with_dataset(("a/zzzz.png", png(9)))
    data = patch(data, "a/zzzz.png", flags=0x800)
    return data.replace(b"a/zzzz.png", b"a/\xff\xfe\xfd\xfc.png")


def upload_cases() -> list[Case]:
    """Refused at upload (422): the zip's structure, names and declared sizes, and one capped
    read of each entry. Limits: tests.hardening.conftest.LIMITS."""
    deflate = zipfile.ZIP_DEFLATED
    z = with_dataset
    return [
        Case("zip_slip", z(("../../evil.png", png())), "path_traversal", "../../evil.png"),
        Case("zip_slip_inner", z(("a/../../../evil.png", png())), "path_traversal", "a/../../../evil.png"),
        Case("dot_component", z(("a/./x.png", png())), "path_traversal", "a/./x.png"),
        Case("absolute_path", z(("/etc/x.png", png())), "absolute_path", "/etc/x.png"),
        Case("drive_letter", z(("C:/Windows/x.png", png())), "absolute_path", "C:/Windows/x.png"),
        Case("backslash_slip", z(("..\\x.png", png())), "backslash", "..\\\\x.png"),
        Case("empty_component", z(("a//x.png", png())), "bad_name", "a//x.png"),
        Case("nul_in_name", _nul_name(), "control_character", "a/evil\\x00.png"),
        Case("newline_in_name", _control_name(b"\n"), "control_character", "a/x\\n.png"),
        Case("escape_in_name", _control_name(b"\x1b"), "control_character", "a/x\\x1b.png"),
        Case("rtl_override_name", z(("a/\u202egnp.exe", png())), "control_character", "a/\\u202egnp.exe"),
        Case("name_too_long", z(("a/" + "x" * 300 + ".png", png())), "name_too_long", "a/" + "x" * 300 + ".png"),
        Case("symlink", _attr_zip("a/link.png", SYMLINK_ATTR), "symlink", "a/link.png"),
        Case("fifo", _attr_zip("a/fifo.png", FIFO_ATTR), "special_file", "a/fifo.png"),
        Case("duplicate_name", z(("a/a_0.png", png(5))), "duplicate_name", "a/a_0.png"),
        Case("case_collision", z(("A/x.png", png()), ("a/X.png", png())), "name_collision", "a/X.png"),
        Case("nfc_nfd_collision", z(("caf\u00e9/x.png", png()), ("cafe\u0301/x.png", png())), "name_collision", "cafe\u0301/x.png"),
        Case("nested_zip_by_name", z(("a/inner.zip", make_zip(valid_entries()))), "nested_archive", "a/inner.zip"),
        Case("nested_tar_gz_by_name", z(("a/data.tar.gz", b"\x1f\x8b" + b"\0" * 20)), "nested_archive", "a/data.tar.gz"),
        Case("zip_named_png", z(("a/inner.png", make_zip(valid_entries()))), "nested_archive", "a/inner.png"),
        Case("gzip_named_png", z(("a/x.png", _gzip(png()))), "nested_archive", "a/x.png"),
        Case("polyglot_png_zip", z(("a/poly.png", png() + make_zip([("x.txt", b"x")]))), "nested_archive", "a/poly.png"),
        Case("encrypted", patch(_two(), "a/first.png", flags=0x1), "encrypted", "a/first.png"),
        Case("bzip2_method", z(("a/x.png", png(), zipfile.ZIP_BZIP2)), "compression_method", "a/x.png"),
        Case("lzma_method", z(("a/x.png", png(), zipfile.ZIP_LZMA)), "compression_method", "a/x.png"),
        Case("zip_bomb_ratio", z(("a/bomb.png", b"\0" * (1536 * 1024), deflate)), "compression_ratio", "a/bomb.png"),
        Case("zip_bomb_overall", make_zip([(f"{c}/{i}.png", b"\0" * 60_000) for c in "ab" for i in range(20)], deflate), "compression_ratio", None),
        Case("too_many_entries", make_zip([(f"{c}/{i}.png", b"x") for c in "ab" for i in range(40)]), "too_many_entries", None),
        Case("declared_entry_too_big", patch(_two(), "a/first.png", file_size=0x7FFF_FFF0), "entry_too_large", "a/first.png"),
        Case("declared_total_too_big", z(*[(f"a/blob{i}.bin", _random(1_500_000, i)) for i in range(3)]), "total_too_large", None),
        Case("overlap_fifield", _overlap_by_size(), "overlapping_entries", "b/second.png"),
        Case("overlap_shared_header", _overlap_shared_header(), "overlapping_entries", "b/second.png"),
        Case("cd_understates_size", _size_lie(0.5), "size_mismatch", "a/first.png"),
        Case("cd_overstates_size", _size_lie(1.5), "size_mismatch", "a/first.png"),
        Case("crc_mismatch", patch(_two(), "a/first.png", crc=0xDEADBEEF), "crc_mismatch", "a/first.png"),
        Case("local_header_mismatch", _bad_local_name(), "bad_local_header", "a/first.png"),
        Case("invalid_utf8_name", _invalid_utf8_name(), "unreadable_archive", None),
        Case("not_a_zip_html", HTML, "not_a_zip", None),
        Case("empty_upload", b"", "not_a_zip", None),
        Case("truncated_zip", _two()[:3000], "not_a_zip", None),
        # Names that cannot be unpacked: a path that is a file and a folder, a name too long
        # for any file system (136 characters, 264 bytes in UTF-8).
        Case("file_and_folder", z(("a/x.png", png()), ("a/x.png/y.png", png())), "file_folder_conflict", "a/x.png/y.png"),
        Case("folder_entry_and_file", z(("a/x.png", png()), ("a/x.png/", b"")), "file_folder_conflict", "a/x.png/"),
        Case("file_and_folder_by_case", z(("a/x.png", png()), ("A/X.PNG/y.png", png())), "file_folder_conflict", "A/X.PNG/y.png"),
        Case("component_over_255_bytes", z(("a/" + "\u00e9" * 130 + ".png", png())), "component_too_long", "a/" + "\u00e9" * 130 + ".png"),
        *image_header_cases(),
    ]  # fmt: skip


# Refused from the image's header at upload (pipeline.archive.check_image_header), not by
# structure: nothing is decoded.
IMAGE_HEADER_CASES = {
    "png_header_bomb", "png_over_pixel_cap", "html_named_png", "svg_named_png", "gif_named_png",
    "webp_named_jpg", "animated_png", "empty_image", "every_image_empty",
}  # fmt: skip


def image_header_cases() -> list[Case]:
    z = with_dataset
    empty = [(f"{c}/{i}.png", b"") for c in "ab" for i in range(3)]
    return [
        Case("png_header_bomb", z(("a/bomb.png", png_header_bomb(60_000, 60_000))), "decompression_bomb", "a/bomb.png"),
        Case("png_over_pixel_cap", z(("a/big.png", png_header_bomb(2000, 2000))), "image_too_large", "a/big.png"),
        Case("html_named_png", z(("a/page.png", HTML)), "image_format", "a/page.png"),
        Case("svg_named_png", z(("b/vector.png", SVG)), "image_format", "b/vector.png"),
        Case("gif_named_png", z(("a/anim.png", other_format("GIF"))), "image_format", "a/anim.png"),
        Case("webp_named_jpg", z(("a/photo.jpg", other_format("WEBP"))), "image_format", "a/photo.jpg"),
        Case("animated_png", z(("a/anim.png", apng())), "multi_frame", "a/anim.png"),
        Case("empty_image", z(("b/empty.png", b"")), "empty_file", "b/empty.png"),
        Case("every_image_empty", make_zip(empty), "empty_file", "a/0.png"),
    ]  # fmt: skip


def _attr_zip(name: str, attr: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in valid_entries():
            zf.writestr(n, d)
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3  # unix
        info.external_attr = attr
        zf.writestr(info, b"/etc/passwd")
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)
