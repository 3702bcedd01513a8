"""Where uploads and job outputs live: one interface, two backends.

- LocalStorage (BALANCER_STORAGE_URL unset): files under DATA_DIR/jobs/<job id>/ and datasets
  in DATA_DIR/datasets/<dataset id>.zip, folders that the API and every worker share (one
  host, or a shared volume).
- S3Storage (`s3://BUCKET/PREFIX`, app/storage_s3.py): an object store that every host
  reaches; each host's DATA_DIR is only scratch space.

The API stages an upload in its DATA_DIR (save_upload), checks it, then hands it to the store
(keep_upload); a dataset likewise (stage_dataset, keep_dataset), and a job's worker reads it
with fetch_dataset. A worker asks for a local copy (fetch_upload), writes the outputs into an
attempt folder, and hands them over (publish) before the job is marked succeeded. Paths and
keys come from the job id only, never from anything the client sent.

Imported by the API and by the worker: no FastAPI here (see app/storage_http.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import BinaryIO, Protocol

from app.settings import Settings

log = logging.getLogger(__name__)
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


def storage_for(settings: Settings) -> Storage:
    return _open(
        settings.storage_url,
        settings.data_dir,
        settings.s3_endpoint_url,
        settings.s3_public_endpoint_url,
        settings.s3_presign,
        settings.s3_presign_expires_s,
    )


@cache
def _open(
    url: str,
    data_dir: Path,
    endpoint: str,
    public_endpoint: str,
    presign: bool,
    presign_expires_s: int,
) -> Storage:
    if not url:
        return LocalStorage(data_dir / "jobs", data_dir / DATASETS_DIR)
    from app.storage_s3 import S3Storage  # boto3 is loaded only when it is used

    return S3Storage(url, data_dir / "jobs", endpoint, public_endpoint, presign, presign_expires_s)


# --- paths on this host ---------------------------------------------------------------------


def job_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    return settings.jobs_dir / str(job_id)


def upload_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / UPLOAD_NAME


def out_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / OUT_DIR


def attempt_dir(settings: Settings, job_id: uuid.UUID, attempt: int) -> Path:
    return job_dir(settings, job_id) / f"{ATTEMPT_PREFIX}{attempt}"


def dataset_path(settings: Settings, dataset_id: uuid.UUID) -> Path:
    """Where the API stages a dataset upload (and, for local files, where it stays)."""
    return settings.data_dir / DATASETS_DIR / f"{dataset_id}.zip"


def save_upload(settings: Settings, job_id: uuid.UUID, source: BinaryIO) -> int:
    """Stage the upload in the job folder chunk by chunk; raise UploadTooLarge past the limit."""
    return save_stream(settings, upload_path(settings, job_id), source)


def stage_dataset(settings: Settings, dataset_id: uuid.UUID, source: BinaryIO) -> int:
    """Stage a dataset upload chunk by chunk; raise UploadTooLarge past the limit."""
    return save_stream(settings, dataset_path(settings, dataset_id), source)


def save_stream(settings: Settings, target: Path, source: BinaryIO) -> int:
    """Write `source` to `target` chunk by chunk; raise UploadTooLarge past the limit."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(settings.upload_chunk_bytes):
            written += len(chunk)
            if written > settings.max_upload_bytes:
                raise UploadTooLarge
            out.write(chunk)
    return written


def delete_job_files(settings: Settings, job_id: uuid.UUID) -> None:
    """Everything of the job: the staged upload on this host and what the store holds."""
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
    storage_for(settings).delete_job(job_id)


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


# --- local files ----------------------------------------------------------------------------


class LocalStorage:
    """Today's layout: jobs/<id>/upload.zip, attempt-N/ while a worker runs, out/ once done.
    An attempt's folder is renamed to out/ only when complete, so a half-written attempt
    never looks finished."""

    def __init__(self, jobs_dir: Path, datasets_dir: Path) -> None:
        self.jobs_dir, self.datasets_dir = jobs_dir, datasets_dir
        self.description = f"local files in {jobs_dir.parent}"

    def _job(self, job_id: uuid.UUID) -> Path:
        return self.jobs_dir / str(job_id)

    def keep_upload(self, job_id: uuid.UUID) -> None:
        pass  # staged where the workers read it

    def fetch_upload(self, job_id: uuid.UUID, attempt: int) -> Path:
        return self._job(job_id) / UPLOAD_NAME

    def keep_dataset(self, dataset_id: uuid.UUID, staged: Path) -> None:
        pass  # staged where the workers read it

    def fetch_dataset(self, dataset_id: uuid.UUID, job_id: uuid.UUID, attempt: int) -> Path:
        path = self.datasets_dir / f"{dataset_id}.zip"
        if not path.is_file():
            raise StorageUnavailable(f"the dataset {dataset_id} is missing from {path.parent}")
        return path

    def delete_dataset(self, dataset_id: uuid.UUID) -> None:
        (self.datasets_dir / f"{dataset_id}.zip").unlink(missing_ok=True)

    def stored_datasets(self, older_than: datetime) -> set[uuid.UUID]:
        cutoff = older_than.timestamp()
        found = set()
        for path in self.datasets_dir.glob("*.zip"):
            dataset_id = parse_job_id(path.stem)
            try:
                old = path.stat().st_mtime < cutoff
            except OSError:  # removed while we looked
                continue
            if dataset_id and old:
                found.add(dataset_id)
        return found

    def publish(self, job_id: uuid.UUID, work: Path, still_ours: StillOurs) -> list[StoredArtifact]:
        """Replace out/ with this attempt's outputs. An out/ can only be left over from an
        attempt that died between this rename and marking the job succeeded, so nothing
        serves it: the API serves files of succeeded jobs only."""
        out = self._job(job_id) / OUT_DIR
        shutil.rmtree(out, ignore_errors=True)
        work.rename(out)
        base = self.jobs_dir.parent
        return [
            StoredArtifact(name, path.relative_to(base).as_posix(), *file_digest(path))
            for name, path in output_files(out)
        ]

    def discard_outputs(self, job_id: uuid.UUID) -> None:
        shutil.rmtree(self._job(job_id) / OUT_DIR, ignore_errors=True)
        for attempt in self._job(job_id).glob(f"{ATTEMPT_PREFIX}*"):
            remove_path(attempt)

    def release_scratch(self, job_id: uuid.UUID, attempt: int) -> None:
        remove_path(self._job(job_id) / f"{ATTEMPT_PREFIX}{attempt}")

    def download(self, job_id: uuid.UUID, name: str, filename: str | None = None) -> Download:
        path = self._job(job_id) / OUT_DIR / name
        if not path.is_file():
            raise ArtifactMissing(f"{name} of job {job_id} is gone")
        return Download(size=path.stat().st_size, path=path)

    def delete_job(self, job_id: uuid.UUID) -> None:
        shutil.rmtree(self._job(job_id), ignore_errors=True)

    def stored_jobs(self, older_than: datetime) -> set[uuid.UUID]:
        cutoff = older_than.timestamp()
        found = set()
        for folder in self.jobs_dir.glob("*"):
            job_id = parse_job_id(folder.name)
            if job_id and _newest_mtime(folder) < cutoff:
                found.add(job_id)
        return found

    def check(self) -> None:
        if not os.access(self.jobs_dir, os.W_OK):
            raise StorageUnavailable(f"{self.jobs_dir} is not writable")

    def create_if_missing(self) -> bool:
        created = not self.jobs_dir.is_dir()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.datasets_dir.mkdir(parents=True, exist_ok=True)
        return created


def _newest_mtime(folder: Path) -> float:
    try:
        return max([folder.stat().st_mtime, *(p.stat().st_mtime for p in folder.rglob("*"))])
    except OSError:  # removed while we looked: in use, not an orphan
        return time.time()


def remove_stale_scratch(jobs_dir: Path, older_than_s: float) -> int:
    """Scratch a killed worker left on this host (S3 backend): job folders untouched for
    longer than any job may run. Returns how many were removed."""
    cutoff, removed = time.time() - older_than_s, 0
    for folder in jobs_dir.glob("*"):
        if parse_job_id(folder.name) and _newest_mtime(folder) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
