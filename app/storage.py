"""Job folders under DATA_DIR/jobs/<job id>/. Paths come from the job id only, never from
anything the client sent."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from app.settings import Settings

UPLOAD_NAME = "upload.zip"
OUT_DIR = "out"


class UploadTooLarge(Exception):
    pass


def job_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    return settings.jobs_dir / str(job_id)


def upload_path(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / UPLOAD_NAME


def out_dir(settings: Settings, job_id: uuid.UUID) -> Path:
    return job_dir(settings, job_id) / OUT_DIR


def save_upload(settings: Settings, job_id: uuid.UUID, source: BinaryIO) -> int:
    """Copy the upload to the job folder chunk by chunk; raise UploadTooLarge past the limit."""
    target = upload_path(settings, job_id)
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
    shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
