"""The storage interface every backend implements, its errors and the small file helpers the
backends share. No backend and no settings here, so each backend imports this module alone
(the factory in jobs/storage/__init__.py imports the backends)."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

UPLOAD_NAME = "upload.zip"
DATASETS_DIR = "datasets"
OUT_DIR = "out"
ATTEMPT_PREFIX = "attempt-"
HASH_CHUNK = 1024**2


class UploadTooLarge(Exception):
    pass


class StorageUnavailable(Exception):
    """The store cannot be reached or refused the request; the message says which, for a
    person (no credentials in it)."""


class ArtifactMissing(Exception):
    """A file a finished job should have is not in the store."""


@dataclass(frozen=True)
class StoredArtifact:
    name: str  # e.g. "balanced.zip"
    key: str  # where the store keeps it: a key (S3) or a path relative to DATA_DIR (local)
    size: int
    sha256: str


@dataclass(frozen=True)
class Download:
    """How the API hands a file out: a local path, a presigned URL, or a byte stream."""

    size: int | None = None
    path: Path | None = None
    url: str | None = None
    chunks: Iterator[bytes] | None = None


StillOurs = Callable[[], None]  # raises (e.g. LeaseLost) once the attempt lost its job


class Storage(Protocol):
    description: str

    def keep_upload(self, job_id: uuid.UUID) -> None:
        """The staged upload passed the checks: store it for the workers."""

    def fetch_upload(self, job_id: uuid.UUID, attempt: int) -> Path:
        """A local path of the job's upload, for the pipeline to read."""

    def keep_dataset(self, dataset_id: uuid.UUID, staged: Path) -> None:
        """The staged dataset (stage_dataset) passed the checks: store it for the workers."""

    def fetch_dataset(self, dataset_id: uuid.UUID, job_id: uuid.UUID, attempt: int) -> Path:
        """A local path of the dataset, for the job's attempt to read (released with the
        attempt's scratch)."""

    def delete_dataset(self, dataset_id: uuid.UUID) -> None:
        """Remove the stored dataset (best effort)."""

    def stored_datasets(self, older_than: datetime) -> set[uuid.UUID]:
        """Ids of datasets stored, last written before `older_than`."""

    def publish(self, job_id: uuid.UUID, work: Path, still_ours: StillOurs) -> list[StoredArtifact]:
        """Store the attempt's complete outputs (the folder `work`) as the job's results."""

    def discard_outputs(self, job_id: uuid.UUID) -> None:
        """A failed or canceled job has no results: drop any an attempt left."""

    def release_scratch(self, job_id: uuid.UUID, attempt: int) -> None:
        """The attempt ended: remove what it kept on this host that the store does not need."""

    def download(self, job_id: uuid.UUID, name: str, filename: str | None = None) -> Download:
        """How to serve one output of a succeeded job; raises ArtifactMissing."""

    def delete_job(self, job_id: uuid.UUID) -> None:
        """Remove everything stored for the job (best effort: orphans are swept later)."""

    def stored_jobs(self, older_than: datetime) -> set[uuid.UUID]:
        """Ids of jobs with anything stored, last written before `older_than`."""

    def check(self) -> None:
        """Raise unless the store is usable (readiness)."""

    def create_if_missing(self) -> bool:
        """Create the bucket or folder unless it exists; True if it was created."""


# --- helpers the backends share ------------------------------------------------------------


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def output_files(work: Path) -> list[tuple[str, Path]]:
    """(name, path) of every file under `work`, names relative with forward slashes."""
    return sorted((p.relative_to(work).as_posix(), p) for p in work.rglob("*") if p.is_file())


def parse_job_id(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name)
    except ValueError:
        return None
