"""Datasets in the database: an owner's uploaded datasets, the built-in ones every owner may
use, and the rule that a dataset queued or running jobs use stays.

A dataset row and a job row that names it are guarded against each other: the job is
created, and the dataset deleted, each in a transaction that first locks the dataset's row
(SELECT ... FOR UPDATE on PostgreSQL; SQLite runs one writer at a time), so a dataset is never
deleted under a job that was just queued on it.

What a dataset holds (`summary`) comes from the upload check (pipeline/layout.py): classes,
images per class in training and test, the layout, image sizes and mode, and warnings.
"""

from __future__ import annotations

import uuid
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from jobs.models import Dataset, Job, JobStatus
from jobs.settings import Settings
from pipeline.archive import ArchiveLimits
from pipeline.builtin_datasets import BUILTIN, builtin_zip, is_builtin
from pipeline.layout import DatasetLayout, check_upload

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
SHOWN_NAMES = 5


def summarize(layout: DatasetLayout) -> dict[str, Any]:
    """The upload check's findings, as stored and answered (DatasetOut)."""
    headers = list(layout.headers.values())
    widths = [h.width for h in headers] or [0]
    heights = [h.height for h in headers] or [0]
    warnings = list(layout.warnings)
    if layout.skipped:
        shown = ", ".join(layout.skipped[:SHOWN_NAMES])
        more = ", ..." if len(layout.skipped) > SHOWN_NAMES else ""
        warnings.insert(
            0,
            f"skipped {len(layout.skipped)} file(s) that are not images in class folders: "
            f"{shown}{more}",
        )
    return {
        "classes": layout.class_names,
        "counts": {
            c: {"train": len(layout.train[c]), "test": len(layout.test[c])}
            for c in layout.class_names
        },
        "test_source": layout.test_source,
        "layout": layout.source,
        "images": sum(len(v) for v in layout.train.values())
        + sum(len(v) for v in layout.test.values()),
        "image_size": {"min": [min(widths), min(heights)], "max": [max(widths), max(heights)]},
        "mode": "grayscale" if all(h.grayscale for h in headers) else "rgb",
        "warnings": warnings,
    }


def builtin_summary(settings: Settings, dataset_id: str) -> dict[str, Any]:
    """A built-in dataset's summary (its zip is written on first use, then described once)."""
    return _described(dataset_id, settings.builtin_dir, settings.archive_limits())


@cache
def _described(dataset_id: str, folder: Path, limits: ArchiveLimits) -> dict[str, Any]:
    path = builtin_zip(dataset_id, folder)
    summary = summarize(check_upload(path, limits=limits))
    return summary | {"size_bytes": path.stat().st_size, "name": BUILTIN[dataset_id].name}


def get_owned(session: Session, dataset_id: str, owner: str, lock: bool = False) -> Dataset | None:
    """The owner's dataset; None for another owner's, a built-in id, or an unknown id.
    `lock`: hold its row until the transaction ends (see the module's docstring)."""
    try:
        key = uuid.UUID(dataset_id)
    except ValueError:
        return None
    query = select(Dataset).where(Dataset.id == key, Dataset.owner == owner)
    if lock:
        query = query.with_for_update()
    return session.scalars(query.execution_options(populate_existing=True)).first()


def usable(session: Session, dataset_id: str, owner: str) -> bool:
    """Whether the owner may start a job on the dataset; locks an uploaded one's row."""
    return is_builtin(dataset_id) or get_owned(session, dataset_id, owner, lock=True) is not None


def list_owned(session: Session, owner: str, limit: int, offset: int) -> tuple[list[Dataset], int]:
    """One owner's datasets, newest first, and how many they have."""
    mine = Dataset.owner == owner
    total = session.scalar(select(func.count()).select_from(Dataset).where(mine)) or 0
    newest = select(Dataset).where(mine).order_by(Dataset.created_at.desc(), Dataset.id.desc())
    return list(session.scalars(newest.limit(limit).offset(offset))), total


def active_jobs(session: Session, dataset_id: str) -> list[uuid.UUID]:
    """Queued and running jobs on the dataset (any owner's: a built-in one is shared)."""
    query = select(Job.id).where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE))
    return list(session.scalars(query.order_by(Job.created_at)))


def delete_unless_in_use(session: Session, dataset: Dataset) -> list[uuid.UUID]:
    """Delete the dataset's row unless queued or running jobs use it; returns those jobs
    (empty: deleted). Commits."""
    locked = get_owned(session, str(dataset.id), dataset.owner, lock=True)
    if locked is None:
        session.rollback()
        return []
    users = active_jobs(session, str(dataset.id))
    if users:
        session.rollback()
        return users
    session.execute(delete(Dataset).where(Dataset.id == dataset.id))
    session.commit()
    return []


def totals(session: Session) -> tuple[int, int]:
    """How many uploaded datasets there are and their bytes, for /metrics."""
    count, size = session.execute(
        select(func.count(), func.coalesce(func.sum(Dataset.size_bytes), 0))
    ).one()
    return int(count), int(size)
