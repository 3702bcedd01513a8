"""Submitting a job: the row inserted queued on a usable dataset, and its message sent, or
nothing left behind. The one way a job is created (the API's JSON route and its upload route,
which stores the dataset first).

No HTTP here: a dataset the owner may not use is DatasetNotFound, a broker that refused the
message is QueueUnavailable, and the caller's own check once the row is in (the owner's limit
of active jobs, which two submissions at once can both pass before either row exists) raises
whatever the caller wants; each undoes the job first.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from jobs import crud, dataset_store
from jobs.models import Job, JobStatus
from jobs.settings import Settings
from jobs.state import Send
from jobs.storage import delete_job_files


class DatasetNotFound(Exception):
    """The dataset does not exist, or the owner may not use it."""


class QueueUnavailable(Exception):
    """The job's message could not be sent; the message says why."""


def submit(
    session: Session,
    settings: Settings,
    owner: str,
    dataset_id: str,
    config: dict[str, Any],
    send: Send,
    recheck: Callable[[Job], None] = lambda job: None,
) -> Job:
    """Insert a queued job on `dataset_id` (the owner's or a built-in one) with the resolved
    run options `config`, run `recheck(job)` with the row committed, then send the message.
    If recheck raises, or the send fails (QueueUnavailable), the job's row and files are
    removed before the error propagates."""
    job = Job(
        id=uuid.uuid4(),
        owner=owner,
        status=JobStatus.queued.value,
        config=config,
        dataset_id=dataset_id,
    )
    if not dataset_store.usable(session, dataset_id, owner):  # locks the dataset's row
        session.rollback()
        raise DatasetNotFound(dataset_id)
    session.add(job)
    session.commit()
    try:
        recheck(job)
    except BaseException:
        _undo(session, settings, job.id)
        raise
    try:
        send(job.id)
    except Exception as exc:
        _undo(session, settings, job.id)
        raise QueueUnavailable(str(exc)) from exc
    return job


def _undo(session: Session, settings: Settings, job_id: uuid.UUID) -> None:
    crud.delete_job(session, job_id)
    delete_job_files(settings, job_id)
