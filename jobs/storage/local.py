"""Jobs and datasets as files under DATA_DIR, in folders that the API and every worker share
(one host, or a shared volume). Also the scratch clean-up a worker runs on its own host."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from datetime import datetime
from pathlib import Path

from jobs.storage.base import (
    ATTEMPT_PREFIX,
    OUT_DIR,
    UPLOAD_NAME,
    ArtifactMissing,
    Download,
    StillOurs,
    StorageUnavailable,
    StoredArtifact,
    file_digest,
    output_files,
    parse_job_id,
    remove_path,
)


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
