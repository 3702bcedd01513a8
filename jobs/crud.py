"""Reading, counting and deleting job rows, for the API. A job's status changes only in
jobs/state.py."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from jobs.models import ClassReport, Job, JobStatus


def get_job(session: Session, job_id: uuid.UUID) -> Job | None:
    """Any owner's job: for the worker and internal use. Routes use get_owned_job."""
    return session.get(Job, job_id, populate_existing=True)


def get_owned_job(session: Session, job_id: uuid.UUID, owner: str) -> Job | None:
    """The job if `owner` owns it; None for another owner's job, exactly as for an unknown id."""
    job = get_job(session, job_id)
    return job if job is not None and job.owner == owner else None


def list_jobs(session: Session, owner: str, limit: int, offset: int) -> tuple[list[Job], int]:
    """One owner's jobs, newest first, and how many they have."""
    mine = Job.owner == owner
    total = session.scalar(select(func.count()).select_from(Job).where(mine)) or 0
    newest_first = select(Job).where(mine).order_by(Job.created_at.desc(), Job.id.desc())
    jobs = session.scalars(newest_first.limit(limit).offset(offset)).all()
    return list(jobs), total


def count_active_jobs(session: Session, owner: str) -> int:
    """The owner's queued and running jobs (what the per-owner concurrency limit counts)."""
    active = (JobStatus.queued.value, JobStatus.running.value)
    query = select(func.count()).select_from(Job).where(Job.owner == owner)
    return session.scalar(query.where(Job.status.in_(active))) or 0


def class_rows(session: Session, job_id: uuid.UUID) -> list[ClassReport]:
    query = select(ClassReport).where(ClassReport.job_id == job_id).order_by(ClassReport.id)
    return list(session.scalars(query).all())


def delete_job(session: Session, job_id: uuid.UUID) -> None:
    session.execute(delete(ClassReport).where(ClassReport.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))
    session.commit()
