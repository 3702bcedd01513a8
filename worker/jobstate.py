"""The worker's state transitions of a job row. Each is a conditional UPDATE, so a cancel
from the API and a transition here can't overwrite each other."""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import ClassReport, Job, JobStatus, utcnow

log = logging.getLogger(__name__)
STARTABLE = (JobStatus.queued.value, JobStatus.running.value)  # running: a re-delivery


def claim(sessions: sessionmaker[Session], job_id: uuid.UUID, max_attempts: int) -> dict | None:
    """Mark the job running and return its config; None if it must not run."""
    with sessions.begin() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in STARTABLE:
            log.info("job %s: not startable (%s), skipped", job_id, job and job.status)
            return None
        if job.cancel_requested:
            _set_finished(session, job_id, JobStatus.canceled, None)
            return None
        if job.attempts >= max_attempts:
            msg = (
                f"the worker stopped {job.attempts} times while running this job "
                "(out of memory, or the machine restarted?); giving up"
            )
            _set_finished(session, job_id, JobStatus.failed, msg)
            return None
        started = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.attempts == job.attempts, Job.status.in_(STARTABLE))
            .where(Job.cancel_requested.is_(False))
            .values(
                status=JobStatus.running.value,
                stage="validating",
                progress=0.0,
                started_at=utcnow(),
                attempts=Job.attempts + 1,
                error=None,
            )
        )
        return dict(job.config) if started.rowcount == 1 else None


def finish(
    sessions: sessionmaker[Session], job_id: uuid.UUID, status: JobStatus, error: str | None
) -> None:
    with sessions.begin() as session:
        _set_finished(session, job_id, status, error)


def succeed(sessions: sessionmaker[Session], job_id: uuid.UUID, report: dict[str, Any]) -> None:
    report = _finite(report)
    with sessions.begin() as session:
        session.execute(delete(ClassReport).where(ClassReport.job_id == job_id))
        session.add_all(class_rows(job_id, report))
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running.value)
            .values(
                status=JobStatus.succeeded.value,
                progress=1.0,
                report=report,
                finished_at=utcnow(),
                error=None,
            )
        )


def class_rows(job_id: uuid.UUID, report: dict[str, Any]) -> list[ClassReport]:
    """One row per (class, method) from the report's `classes` and `methods`."""
    rows = []
    for cls in report["classes"]:
        for method, figures in report["methods"].items():
            per_class = figures.get("per_class", {}).get(cls["name"], {})
            rows.append(
                ClassReport(
                    job_id=job_id,
                    class_name=cls["name"],
                    method=method,
                    train_count=cls["train_count"],
                    # Only the gan method trains on generated images.
                    synthetic_count=cls["synthetic_count"] if method == "gan" else 0,
                    test_count=cls["test_count"],
                    accuracy=per_class.get("accuracy"),
                    f1=per_class.get("f1"),
                    metrics=per_class,
                )
            )
    return rows


def _set_finished(
    session: Session, job_id: uuid.UUID, status: JobStatus, error: str | None
) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(STARTABLE))
        .values(status=status.value, error=error, finished_at=utcnow())
    )


def _finite(value: Any) -> Any:
    """NaN and infinities become null: PostgreSQL's JSON type rejects them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
