"""Where uploads and job outputs live: one interface, two backends.

- LocalStorage (BALANCER_STORAGE_URL unset, jobs/storage/local.py): files under
  DATA_DIR/jobs/<job id>/ and datasets in DATA_DIR/datasets/<dataset id>.zip, folders that
  the API and every worker share (one host, or a shared volume).
- S3Storage (`s3://BUCKET/PREFIX`, jobs/storage/s3.py): an object store that every host
  reaches; each host's DATA_DIR is only scratch space.

The API stages an upload in its DATA_DIR (save_upload), checks it, then hands it to the store
(keep_upload); a dataset likewise (stage_dataset, keep_dataset), and a job's worker reads it
with fetch_dataset. A worker asks for a local copy (fetch_upload), writes the outputs into an
attempt folder, and hands them over (publish) before the job is marked succeeded. Paths and
keys come from the job id only, never from anything the client sent.

Imported by the API and by the worker: no FastAPI here (see app/storage_http.py). The
interface and errors are in base.py, which the backends import; this module is the factory
(storage_for) and the paths on this host.
"""

from __future__ import annotations

import shutil
import uuid
from functools import cache
from pathlib import Path
from typing import BinaryIO

from jobs.settings import Settings
from jobs.storage.base import (
    ATTEMPT_PREFIX,
    DATASETS_DIR,
    HASH_CHUNK,
    OUT_DIR,
    UPLOAD_NAME,
    ArtifactMissing,
    Download,
    StillOurs,
    Storage,
    StorageUnavailable,
    StoredArtifact,
    UploadTooLarge,
    file_digest,
    output_files,
    parse_job_id,
    remove_path,
)
from jobs.storage.local import LocalStorage, remove_stale_scratch

__all__ = [
    "ATTEMPT_PREFIX",
    "DATASETS_DIR",
    "HASH_CHUNK",
    "OUT_DIR",
    "UPLOAD_NAME",
    "ArtifactMissing",
    "Download",
    "LocalStorage",
    "StillOurs",
    "Storage",
    "StorageUnavailable",
    "StoredArtifact",
    "UploadTooLarge",
    "attempt_dir",
    "dataset_path",
    "delete_job_files",
    "file_digest",
    "job_dir",
    "out_dir",
    "output_files",
    "parse_job_id",
    "remove_path",
    "remove_stale_scratch",
    "save_stream",
    "save_upload",
    "stage_dataset",
    "storage_for",
    "upload_path",
]


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
    from jobs.storage.s3 import S3Storage  # boto3 is loaded only when it is used

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
