"""A folder as a zip, produced piece by piece while it is uploaded, never whole in memory.

httpx's multipart encoder needs each file's length (it reads a file of unknown length into
memory to count it, encode/httpx#2249), so a folder is sent as a hand-built multipart body
from a generator instead, which httpx sends with chunked transfer encoding.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1024**2
# Already compressed: deflating them again costs CPU and saves nothing.
STORED_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".zip"}


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what zipfile writes until it is taken."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def folder_files(folder: Path) -> list[tuple[Path, str]]:
    """Every regular file under `folder` with its name in the zip, in a stable order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.is_file():
                found.append((path, path.relative_to(folder).as_posix()))
    return found


def zip_chunks(folder: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The zip of `folder`'s contents (class folders at its top), in pieces of about
    `chunk_bytes`. On an unseekable stream zipfile writes sizes after each entry (data
    descriptors) and the central directory at the end, which every zip reader accepts."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w") as archive:
        for path, arcname in folder_files(folder):
            info = zipfile.ZipInfo.from_file(path, arcname)
            stored = path.suffix.lower() in STORED_SUFFIXES
            info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
            with path.open("rb") as src, archive.open(info, "w") as dst:
                while block := src.read(chunk_bytes):
                    dst.write(block)
                    if data := sink.take():
                        yield data
            if data := sink.take():
                yield data
    yield sink.take()  # the central directory


def multipart_body(
    filename: str, chunks: Iterator[bytes], config: dict[str, Any]
) -> tuple[str, Iterator[bytes]]:
    """(content type, body) of a multipart/form-data upload: the `config` field, then the
    `dataset` file from `chunks`."""
    boundary = "balancer-" + secrets.token_hex(16)
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "dataset.zip"

    def body() -> Iterator[bytes]:
        if config:
            yield (
                (f'--{boundary}\r\nContent-Disposition: form-data; name="config"\r\n\r\n').encode()
                + json.dumps(config).encode()
                + b"\r\n"
            )
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="dataset"; '
            f'filename="{safe_name}"\r\nContent-Type: application/zip\r\n\r\n'
        ).encode()
        yield from chunks
        yield f"\r\n--{boundary}--\r\n".encode()

    return f"multipart/form-data; boundary={boundary}", body()
