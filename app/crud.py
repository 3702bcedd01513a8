"""Database operations of the API. State changes are conditional UPDATEs, so the API and the
worker cannot overwrite each other's transitions."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from app.models import ClassReport, Job, JobStatus, utcnow


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def list_jobs(session: Session, limit: int, offset: int) -> tuple[list[Job], int]:
    total = session.scalar(select(func.count()).select_from(Job)) or 0
    newest_first = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    jobs = session.scalars(newest_first.limit(limit).offset(offset)).all()
    return list(jobs), total


def class_rows(session: Session, job_id: uuid.UUID) -> list[ClassReport]:
    query = select(ClassReport).where(ClassReport.job_id == job_id).order_by(ClassReport.id)
    return list(session.scalars(query).all())


def cancel_if_queued(session: Session, job_id: uuid.UUID) -> bool:
    """Cancel a job no worker has started; False if it is no longer queued."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.canceled.value, cancel_requested=True, finished_at=utcnow())
    )
    done = session.execute(stmt).rowcount == 1
    session.commit()
    return done


def request_cancel(session: Session, job_id: uuid.UUID) -> bool:
    """Ask the worker running the job to stop; False if it is no longer running."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running.value)
        .values(cancel_requested=True)
    )
    done = session.execute(stmt).rowcount == 1
    session.commit()
    return done


def delete_job(session: Session, job_id: uuid.UUID) -> None:
    session.execute(delete(ClassReport).where(ClassReport.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()
