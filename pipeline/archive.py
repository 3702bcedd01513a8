"""Reading a dataset zip: checking it, listing its entries and decoding its images.

The only module that opens the uploaded archive. `open_zip` refuses a hostile archive from its
central directory and local headers before any entry is read; entries are then read into
memory by their ZipInfo (never extracted to a path named by the upload), each read capped at
its declared size. Every refusal is a DatasetError with a `rule` and the offending `entry`.
"""

from __future__ import annotations

import io
import re
import stat
import struct
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.errors import DatasetError, escape_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Pillow format names accepted after decoding (the suffix alone proves nothing).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")
MAX_IMAGE_PIXELS = 4096 * 4096  # per image; larger ones are refused, not resized

NESTED_SUFFIXES = (
    ".zip", ".zipx", ".jar", ".war", ".apk", ".tar", ".tgz", ".gz", ".bz2", ".tbz2", ".xz",
    ".txz", ".7z", ".rar", ".zst", ".lz4", ".lzma", ".z", ".cab", ".iso", ".cpio", ".arj",
)  # fmt: skip
ARCHIVE_MAGIC = (
    (b"PK\x03\x04", "zip"), (b"PK\x05\x06", "zip"), (b"PK\x07\x08", "zip"),
    (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"), (b"Rar!\x1a\x07", "rar"), (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x04\x22\x4d\x18", "lz4"), (b"MSCF", "cab"), (b"\x1f\x9d", "compress"),
)  # fmt: skip
OTHER_FORMAT_MAGIC = (
    (b"GIF8", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"), (b"8BPS", "PSD"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"BM", "BMP"),
)  # fmt: skip
TEXT_FORMAT_MARKERS = ((b"<svg", "SVG"), (b"<!doctype html", "HTML"), (b"<html", "HTML"),
                       (b"<?xml", "XML"), (b"<script", "HTML"), (b"<?php", "PHP"))  # fmt: skip
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # signature .. name length, extra length
CENTRAL_HEADER_SIZE = 46
READ_CHUNK = 1024**2
# A central directory record of a dataset zip is ~100 bytes; this leaves a wide margin.
CENTRAL_BYTES_PER_ENTRY = 1024
# Unicode category Cc (C0, DEL, C1) and the bidirectional controls that make names lie.
# Longest file or folder name (one path component) that common file systems accept, in bytes.
MAX_COMPONENT_BYTES = 255
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive and its images may declare. The defaults suit image datasets of up to a
    few GB; the service sets them from BALANCER_ZIP_* / BALANCER_IMAGE_* (jobs.settings)."""

    max_entries: int = 200_000
    max_total_bytes: int = 8 * 1024**3  # sum of the declared uncompressed sizes
    max_entry_bytes: int = 256 * 1024**2  # declared uncompressed size of one entry
    max_ratio: float = 100.0  # uncompressed / compressed, per entry and for the whole zip
    ratio_min_bytes: int = 1024**2  # entries (and zips) below this size skip the ratio check
    max_name_length: int = 1024  # characters in an entry name
    max_image_pixels: int = MAX_IMAGE_PIXELS  # width * height of one image


DEFAULT_LIMITS = ArchiveLimits()


def _refuse(rule: str, name: str | None, text: str) -> DatasetError:
    where = f"entry '{escape_name(name)}': " if name is not None else ""
    return DatasetError(where + text, rule=rule, entry=name)


# --- opening -------------------------------------------------------------------------------


class CheckedZipFile(zipfile.ZipFile):
    """A ZipFile whose structure `open_zip` has checked; `read` is capped at the declared size,
    verifies size and CRC itself and refuses nested archives by their magic bytes."""

    data_offsets: dict[int, int]  # header_offset -> offset of the entry's data, set by open_zip

    def read(self, name: str | zipfile.ZipInfo, pwd: bytes | None = None) -> bytes:
        info = name if isinstance(name, zipfile.ZipInfo) else self.getinfo(name)
        with self._lock:  # the file position is shared with zipfile's own readers
            data = _read_capped(self.fp, info, self.data_offsets[info.header_offset])
        _check_not_archive(data, info.orig_filename)
        return data


def open_zip(path: Path, limits: ArchiveLimits | None = None) -> CheckedZipFile:
    """Open the upload as a zip and check its structure (nothing is decompressed yet), or raise
    DatasetError naming the rule and the entry."""
    limits = limits or DEFAULT_LIMITS
    with Path(path).open("rb") as fp:
        _precheck_central_directory(fp, limits)
    try:
        zf = CheckedZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, struct.error) as exc:
        raise DatasetError(
            f"the upload is not a readable zip archive ({exc})", rule="not_a_zip"
        ) from exc
    except Exception as exc:  # e.g. an undecodable UTF-8 name, an unsupported zip version
        raise DatasetError(
            f"the zip archive cannot be read ({type(exc).__name__}: {exc})",
            rule="unreadable_archive",
        ) from exc
    try:
        zf.data_offsets = check_archive(zf, limits)
    except BaseException:
        zf.close()
        raise
    return zf


def _precheck_central_directory(fp: BinaryIO, limits: ArchiveLimits) -> None:
    """Count the central directory's records before zipfile builds one object per record."""
    size = fp.seek(0, io.SEEK_END)
    if size == 0:
        raise DatasetError("the upload is empty, not a zip archive", rule="not_a_zip")
    try:
        endrec = zipfile._EndRecData(fp)  # type: ignore[attr-defined]  # zipfile's own reader
    except (OSError, zipfile.BadZipFile, struct.error) as exc:
        raise DatasetError(
            f"the upload is not a readable zip archive ({exc})", rule="not_a_zip"
        ) from exc
    if not endrec:
        raise DatasetError(
            "the upload is not a readable zip archive (no end of central directory record)",
            rule="not_a_zip",
        )
    cd_size, cd_offset, location = endrec[5], endrec[6], endrec[9]
    concat = location - cd_size - cd_offset
    if endrec[0] == zipfile.stringEndArchive64:  # type: ignore[attr-defined]
        concat -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator  # type: ignore[attr-defined]
    declared = max(endrec[4], 1)
    if endrec[4] > limits.max_entries:
        raise _too_many(endrec[4], limits)
    if cd_size > declared * CENTRAL_BYTES_PER_ENTRY or cd_offset + concat < 0:
        raise DatasetError(
            f"the zip's central directory ({cd_size} bytes for {endrec[4]} entries) is malformed",
            rule="bad_central_directory",
        )
    _count_records(fp, cd_offset + concat, cd_size, limits)


def _count_records(fp: BinaryIO, start: int, size: int, limits: ArchiveLimits) -> None:
    fp.seek(start)
    count = pos = 0
    while pos < size:
        head = fp.read(CENTRAL_HEADER_SIZE)
        if len(head) < CENTRAL_HEADER_SIZE or head[:4] != b"PK\x01\x02":
            raise DatasetError(
                f"the zip's central directory is malformed at record {count + 1}",
                rule="bad_central_directory",
            )
        skip = sum(struct.unpack("<3H", head[28:34]))
        fp.seek(skip, io.SEEK_CUR)
        pos += CENTRAL_HEADER_SIZE + skip
        count += 1
        if count > limits.max_entries:
            raise _too_many(f"over {limits.max_entries}", limits)


def _too_many(count: object, limits: ArchiveLimits) -> DatasetError:
    return DatasetError(
        f"the zip has {count} entries; the limit is {limits.max_entries}",
        rule="too_many_entries",
    )


# --- structural checks ---------------------------------------------------------------------


def check_archive(zf: zipfile.ZipFile, limits: ArchiveLimits) -> dict[int, int]:
    """Every check that needs no decompression; returns each entry's data offset."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _too_many(len(infos), limits)
    for info in infos:
        _check_entry(info, limits)
    _check_unique_names(infos)
    _check_file_folder_conflicts(infos)
    _check_totals(infos, limits)
    return _check_local_headers(zf, infos)


def _check_entry(info: zipfile.ZipInfo, limits: ArchiveLimits) -> None:
    name = info.orig_filename  # zipfile's info.filename is cut at a NUL; this one is not
    check_name(name, limits)
    _check_mode(info)
    if info.flag_bits & 0x41:  # bit 0: encrypted, bit 6: strong encryption
        raise _refuse("encrypted", name, "is encrypted; upload a zip without a password")
    if info.compress_type not in ALLOWED_METHODS:
        raise _refuse(
            "compression_method",
            name,
            f"uses compression method {info.compress_type}; only stored (0) and deflate (8) "
            "are accepted — re-create the zip with a standard tool",
        )
    if not info.is_dir() and name.lower().endswith(NESTED_SUFFIXES):
        raise _refuse("nested_archive", name, "is an archive inside the archive; unpack it first")
    if info.file_size > limits.max_entry_bytes:
        raise _refuse(
            "entry_too_large",
            name,
            f"declares {info.file_size} bytes uncompressed; the limit per entry is "
            f"{limits.max_entry_bytes} bytes",
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise _refuse(
            "compression_ratio",
            name,
            f"expands {ratio:.0f}x ({info.compress_size} -> {info.file_size} bytes); the limit "
            f"is {limits.max_ratio:.0f}x (a zip bomb?)",
        )


def check_name(name: str, limits: ArchiveLimits = DEFAULT_LIMITS) -> None:
    """Refuse names that would be unsafe or ambiguous as paths, without cleaning them."""
    if len(name) > limits.max_name_length:
        raise _refuse("name_too_long", name, f"name is over {limits.max_name_length} characters")
    bad = CONTROL_CHARS.search(name)
    if bad is not None:
        raise _refuse("control_character", name, f"name contains the control character {bad[0]!r}")
    if "\\" in name:
        raise _refuse("backslash", name, "name contains a backslash; use / between folders")
    if name.startswith("/") or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        raise _refuse("absolute_path", name, "name is an absolute path")
    parts = name.rstrip("/").split("/")
    if any(p in ("..", ".") for p in parts):
        raise _refuse("path_traversal", name, "name contains a '..' or '.' path component")
    if not name or any(p == "" for p in parts):
        raise _refuse("bad_name", name, "name is empty or has an empty path component")
    longest = max(len(p.encode("utf-8", "replace")) for p in parts)
    if longest > MAX_COMPONENT_BYTES:
        raise _refuse(
            "component_too_long",
            name,
            f"has a file or folder name of {longest} bytes; file systems allow "
            f"{MAX_COMPONENT_BYTES} (unzip would fail with 'File name too long')",
        )


def _check_mode(info: zipfile.ZipInfo) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise _refuse("symlink", info.orig_filename, "is a symbolic link; only files are accepted")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _refuse("special_file", info.orig_filename, "is a device, pipe or socket, not a file")


def _check_unique_names(infos: list[zipfile.ZipInfo]) -> None:
    exact: set[str] = set()
    folded: dict[str, str] = {}
    for info in infos:
        name = info.orig_filename
        if name in exact:
            raise _refuse("duplicate_name", name, "appears twice in the zip")
        exact.add(name)
        key = _name_key(name)
        if key in folded:
            raise _refuse(
                "name_collision",
                name,
                f"collides with '{escape_name(folded[key])}' (names differing only in case "
                "or Unicode normalisation are ambiguous)",
            )
        folded[key] = name


def _name_key(name: str) -> str:
    """Names that differ only in case or Unicode normalisation are one name (see above)."""
    return unicodedata.normalize("NFC", name).casefold()


def _check_file_folder_conflicts(infos: list[zipfile.ZipInfo]) -> None:
    """Refuse `a/x.png` next to `a/x.png/y.png`: one path cannot be a file and a folder."""
    files = {_name_key(i.orig_filename): i.orig_filename for i in infos if not i.is_dir()}
    for info in infos:
        parts = info.orig_filename.rstrip("/").split("/")
        folders = len(parts) if info.is_dir() else len(parts) - 1
        for depth in range(1, folders + 1):
            file = files.get(_name_key("/".join(parts[:depth])))
            if file is not None:
                raise _refuse(
                    "file_folder_conflict",
                    info.orig_filename,
                    f"uses '{escape_name(file)}' as a folder, but it is a file in the zip",
                )


def _check_totals(infos: list[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    total = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos)
    if total > limits.max_total_bytes:
        raise DatasetError(
            f"the zip declares {total} bytes uncompressed in all; the limit is "
            f"{limits.max_total_bytes} bytes",
            rule="total_too_large",
        )
    ratio = total / max(packed, 1)
    if total > limits.ratio_min_bytes and ratio > limits.max_ratio:
        raise DatasetError(
            f"the zip expands {ratio:.0f}x in all ({packed} -> {total} bytes); the limit is "
            f"{limits.max_ratio:.0f}x (a zip bomb?)",
            rule="compression_ratio",
        )


def _check_local_headers(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> dict[int, int]:
    """Read each local header; refuse entries whose bytes overlap (Fifield's "better zip
    bomb") or run into the central directory, and headers that disagree with it."""
    fp = zf.fp
    assert fp is not None
    end = zf.start_dir  # type: ignore[attr-defined]
    spans = []
    headers = {}
    with zf._lock:  # type: ignore[attr-defined]
        for info in sorted(infos, key=lambda i: i.header_offset):
            header, name_bytes = _local_header(fp, info)
            data_start = info.header_offset + LOCAL_HEADER.size + header[9] + header[10]
            spans.append((info.header_offset, data_start + info.compress_size, info))
            headers[info.header_offset] = (header, name_bytes, data_start)
    _check_spans(spans, end)
    for info in infos:
        header, name_bytes, _ = headers[info.header_offset]
        _check_header_matches(info, header, name_bytes)
    return {offset: data_start for offset, (_, _, data_start) in headers.items()}


def _local_header(fp: BinaryIO, info: zipfile.ZipInfo) -> tuple[tuple, bytes]:
    fp.seek(info.header_offset)
    raw = fp.read(LOCAL_HEADER.size)
    if len(raw) < LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
        raise _refuse("bad_local_header", info.orig_filename, "has no valid local file header")
    header = LOCAL_HEADER.unpack(raw)
    return header, fp.read(header[9])


def _check_spans(spans: list[tuple[int, int, zipfile.ZipInfo]], end: int) -> None:
    previous_end, previous = 0, None
    for start, stop, info in spans:
        if start < previous_end and previous is not None:
            raise _refuse(
                "overlapping_entries",
                info.orig_filename,
                f"overlaps the bytes of '{escape_name(previous.orig_filename)}' (an "
                "overlapping-entry zip bomb?)",
            )
        if stop > end:
            raise _refuse(
                "overlapping_entries",
                info.orig_filename,
                "runs into the central directory (a malformed or hostile zip)",
            )
        previous_end, previous = stop, info


def _check_header_matches(info: zipfile.ZipInfo, header: tuple, name_bytes: bytes) -> None:
    flags, method = header[2], header[3]
    encoding = "utf-8" if flags & 0x800 else "cp437"
    local_name = name_bytes.decode(encoding, errors="replace")
    if (
        local_name != info.orig_filename
        or method != info.compress_type
        or (flags ^ info.flag_bits) & 0x41
    ):
        raise _refuse(
            "bad_local_header",
            info.orig_filename,
            f"local header (name '{escape_name(local_name)}', method {method}) disagrees with "
            "the central directory",
        )


# --- reading -------------------------------------------------------------------------------


def _read_capped(fp: BinaryIO, info: zipfile.ZipInfo, data_start: int) -> bytes:
    """The entry's bytes, never more than its declared size: a central directory that lies
    about a size, or a CRC that does not match, is refused."""
    name = info.orig_filename
    decomp = zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    out = bytearray()
    left = info.compress_size
    fp.seek(data_start)
    while left > 0:
        chunk = fp.read(min(READ_CHUNK, left))
        if not chunk:
            raise _size_mismatch(name, "the archive ends inside the entry")
        left -= len(chunk)
        # At most one byte past the declared size comes out: enough to know it lied.
        out += decomp.decompress(chunk, info.file_size + 1 - len(out)) if decomp else chunk
        if len(out) > info.file_size:
            raise _size_mismatch(
                name, f"decompresses to more than the declared {info.file_size} bytes"
            )
    if decomp is not None and (not decomp.eof or decomp.unused_data):
        raise _size_mismatch(name, "its compressed data does not end where declared")
    if len(out) != info.file_size:
        raise _size_mismatch(name, f"holds {len(out)} bytes, not the declared {info.file_size}")
    if zlib.crc32(out) != info.CRC:
        raise _refuse("crc_mismatch", name, "is damaged (its CRC-32 does not match)")
    return bytes(out)


def _size_mismatch(name: str, why: str) -> DatasetError:
    return _refuse("size_mismatch", name, f"the central directory lies about its size: {why}")


def _check_not_archive(data: bytes, name: str) -> None:
    kind = next((k for magic, k in ARCHIVE_MAGIC if data.startswith(magic)), None)
    if kind is None and data[257:262] == b"ustar":
        kind = "tar"
    if kind is None and _ends_with_zip(data):
        kind = "zip appended to the file (a polyglot)"
    if kind is not None:
        raise _refuse("nested_archive", name, f"is an archive ({kind}), not an image")


def _ends_with_zip(data: bytes) -> bool:
    """True when the data ends with a zip's end-of-central-directory record."""
    floor = max(0, len(data) - 22 - 0xFFFF)
    at = data.rfind(b"PK\x05\x06", floor)
    while at >= 0:
        comment = int.from_bytes(data[at + 20 : at + 22], "little")
        if at + 22 + comment == len(data):
            return True
        at = data.rfind(b"PK\x05\x06", floor, at)
    return False


def scan_entries(
    zf: CheckedZipFile, entries: list[zipfile.ZipInfo], limits: ArchiveLimits | None = None
) -> dict[str, ImageHeader]:
    """Read every entry once (capped, size and CRC checked, no nested archives) and check each
    image's header, without decoding pixels: the upload-time check of what the worker reads.
    Returns each image's header."""
    headers = {}
    for info in entries:
        data = zf.read(info)
        if is_image_name(info.filename):
            headers[info.filename] = check_image_header(data, info.filename, limits)
    return headers


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


# --- images --------------------------------------------------------------------------------


class ImageHeader(NamedTuple):
    width: int
    height: int
    grayscale: bool  # decoded as 'L', else as 'RGB' (decode_image)


def check_image_header(data: bytes, entry: str, limits: ArchiveLimits | None = None) -> ImageHeader:
    """What an image's header declares, without decoding its pixels (cheap enough for every
    image of an upload): not empty, PNG, JPEG or BMP by content, one frame, and at most the
    pixel limit (Pillow's decompression-bomb limits too). A truncated or corrupt body passes
    here and is refused by `decode_image`. Returns its size and whether it is grayscale."""
    with _opened_image(data, entry, limits or DEFAULT_LIMITS) as img:
        return ImageHeader(img.width, img.height, _is_grayscale_mode(img.mode))


def decode_image(data: bytes, entry: str, limits: ArchiveLimits | None = None) -> Image.Image:
    """Fully decode one image and convert it to 'L' (grayscale) or 'RGB'.

    Refused: what `check_image_header` refuses (checked before decoding), truncated or corrupt
    files and PNGs with data after their end.
    """
    with _opened_image(data, entry, limits or DEFAULT_LIMITS) as img:
        img.load()
        _check_png_end(img, data, entry)
        return img.convert("L" if _is_grayscale_mode(img.mode) else "RGB")


@contextmanager
def _opened_image(data: bytes, entry: str, limits: ArchiveLimits) -> Iterator[Image.Image]:
    """The image opened from its header and checked; Pillow errors as DatasetErrors."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    if not data:
        raise _refuse("empty_file", entry, "is an empty file, not an image")
    with (
        _image_errors(data, entry),
        _bomb_warnings_as_errors(),
        Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img,
    ):
        _check_header(img, entry, limits)
        yield img


@contextmanager
def _bomb_warnings_as_errors() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


@contextmanager
def _image_errors(data: bytes, entry: str) -> Iterator[None]:
    """Pillow's exceptions on bad input, as DatasetErrors naming the entry."""
    try:
        yield
    except DatasetError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise _refuse("decompression_bomb", entry, f"is a decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data, entry) from exc
    except Exception as exc:  # hostile bytes make Pillow raise all sorts of things
        rule = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
        raise _refuse(rule, entry, f"cannot decode the image ({exc})") from exc


def _unidentified(data: bytes, entry: str) -> DatasetError:
    kind = sniff_format(data)
    if kind in IMAGE_FORMATS or kind is None:
        return _refuse(
            "corrupt_image", entry, "cannot decode the image (not a readable PNG, JPEG or BMP)"
        )
    return _refuse("image_format", entry, f"format {kind} is not accepted (use PNG, JPEG or BMP)")


def sniff_format(data: bytes) -> str | None:
    """A name for what the bytes look like, for messages only (never to accept a file)."""
    for magic, kind in OTHER_FORMAT_MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    head = data[:512].lstrip().lower()
    return next((kind for marker, kind in TEXT_FORMAT_MARKERS if marker in head), None)


def _check_header(img: Image.Image, entry: str, limits: ArchiveLimits) -> None:
    if img.format not in IMAGE_FORMATS:  # e.g. MPO, which Pillow opens via the JPEG plugin
        raise _refuse(
            "image_format", entry, f"format {img.format} is not accepted (use PNG, JPEG or BMP)"
        )
    if img.width * img.height > limits.max_image_pixels:
        raise _refuse(
            "image_too_large",
            entry,
            f"{img.width}x{img.height} pixels is over the limit of {limits.max_image_pixels} "
            "pixels per image",
        )
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise _refuse(
            "multi_frame", entry, f"has {frames} frames (animated or multi-page); use one image"
        )


def _check_png_end(img: Image.Image, data: bytes, entry: str) -> None:
    if img.format != "PNG" or data.endswith(PNG_END):
        return
    if PNG_END not in data:
        raise _refuse("truncated_image", entry, "has no end (IEND) chunk: the PNG is truncated")
    raise _refuse(
        "trailing_data",
        entry,
        "has data after the end of the PNG (a polyglot file?); re-save the image",
    )


def _is_grayscale_mode(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "I;16", "F")
