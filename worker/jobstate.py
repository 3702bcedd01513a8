"""The worker's side of the job state machine. Every transition is one guarded UPDATE whose
row count says whether it happened:

    queued  -> running                      claim (attempts += 1: the new fencing token)
    running -> running                      heartbeat / progress (only by the fence holder)
    running -> succeeded | failed | canceled  finish (only by the fence holder)

The sweeper (app/sweeper.py) owns the others: running -> queued | failed | canceled once a
lease has lapsed, and the API owns queued -> canceled. `attempts` is the fencing token: a
worker whose job was taken back and started again (attempts moved on) matches no row, so it
can neither overwrite the new attempt's progress nor finish the job.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.job_metrics import record_finish
from app.models import Artifact, ClassReport, Job, JobStatus, utcnow
from app.storage import StoredArtifact
from app.sweeper import gave_up_message

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker no longer holds the job (the sweeper took it back, or another attempt
    started); it must stop at once and write nothing more for it."""


@dataclass(frozen=True)
class Claim:
    job_id: uuid.UUID
    attempt: int  # the fencing token
    config: dict[str, Any]
    dataset_id: str | None = None  # None: the upload sits with the job (before datasets)


@dataclass(frozen=True)
class Beat:
    """What a heartbeat learned: whether the lease was renewed, and whether to stop."""

    held: bool
    cancel_requested: bool = False


def claim(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    worker_id: str,
    lease_s: float,
    max_attempts: int,
    gpu: str | None = None,
) -> Claim | None:
    """Start the job if it is queued; None if it must not run here (finished, running under a
    live lease, claimed by someone else a moment ago, or out of attempts)."""
    with sessions.begin() as session:
        started, gave_up = _claim(session, job_id, worker_id, lease_s, max_attempts, gpu)
    if gave_up:
        with sessions() as session:
            record_finish(session, job_id, JobStatus.failed.value)
    return started


def _claim(
    session: Session,
    job_id: uuid.UUID,
    worker_id: str,
    lease_s: float,
    max_attempts: int,
    gpu: str | None,
) -> tuple[Claim | None, bool]:
    """claim()'s transaction: (the claim or None, whether the job was failed for good)."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.queued.value:
        # A re-delivered or duplicate message: the job is running elsewhere or done.
        log.info("job %s: %s, message ignored", job_id, job.status if job else "no such job")
        return None, False
    seen = job.attempts
    if seen >= max_attempts:  # defensive: the sweeper fails such jobs before re-queueing
        return None, _give_up(session, job_id, seen)
    now = utcnow()
    started = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value, Job.attempts == seen)
        .where(Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.running.value,
            attempts=seen + 1,
            worker_id=worker_id,
            gpu=gpu,
            lease_expires_at=now + timedelta(seconds=lease_s),
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            stage="validating",
            progress=0.0,
            error=None,
        )
    )
    if started.rowcount != 1:
        log.info("job %s: claimed or canceled by someone else first", job_id)
        return None, False
    return Claim(job_id, seen + 1, dict(job.config), job.dataset_id), False


def heartbeat(
    sessions: sessionmaker[Session],
    claim: Claim,
    lease_s: float | None,
    stage: str | None = None,
    progress: float | None = None,
) -> Beat:
    """If this attempt still holds the job: renew the lease (unless lease_s is None) and store
    the progress (if a stage is given). Reports whether a cancel was requested."""
    values: dict[str, Any] = {}
    if lease_s is not None:
        now = utcnow()
        values |= {"heartbeat_at": now, "lease_expires_at": now + timedelta(seconds=lease_s)}
    if stage is not None:
        values |= {"stage": stage, "progress": round(progress or 0.0, 4)}
    with sessions.begin() as session:
        if session.execute(_fenced(claim).values(**values)).rowcount != 1:
            return Beat(held=False)
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == claim.job_id))
    return Beat(held=True, cancel_requested=bool(cancel))


def finish(
    sessions: sessionmaker[Session], claim: Claim, status: JobStatus, error: str | None
) -> bool:
    """End the attempt as failed or canceled; False if this attempt no longer holds the job."""
    with sessions.begin() as session:
        done = session.execute(_fenced(claim).values(**_final(status), error=error)).rowcount
    if done == 1:
        with sessions() as session:
            record_finish(session, claim.job_id, status.value)
    return done == 1


def succeed(
    sessions: sessionmaker[Session],
    claim: Claim,
    report: dict[str, Any],
    artifacts: Sequence[StoredArtifact] = (),
) -> bool:
    """Store the report and the list of stored files and mark the job succeeded, in one
    transaction; False (and nothing written) if this attempt no longer holds the job."""
    report = _finite(report)
    values = _final(JobStatus.succeeded) | {"progress": 1.0, "report": report, "error": None}
    with sessions.begin() as session:
        if session.execute(_fenced(claim).values(**values)).rowcount != 1:
            return False  # the UPDATE matched nothing, so nothing was written
        session.execute(delete(ClassReport).where(ClassReport.job_id == claim.job_id))
        session.add_all(class_rows(claim.job_id, report))
        session.execute(delete(Artifact).where(Artifact.job_id == claim.job_id))
        session.add_all(
            Artifact(job_id=claim.job_id, name=a.name, key=a.key, size=a.size, sha256=a.sha256)
            for a in artifacts
        )
    with sessions() as session:
        record_finish(session, claim.job_id, JobStatus.succeeded.value, report)
    return True


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


def _fenced(claim: Claim):  # noqa: ANN202 (an UPDATE statement)
    return update(Job).where(
        Job.id == claim.job_id,
        Job.status == JobStatus.running.value,
        Job.attempts == claim.attempt,
    )


def _final(status: JobStatus) -> dict[str, Any]:
    return {"status": status.value, "finished_at": utcnow(), "lease_expires_at": None}


def _give_up(session: Session, job_id: uuid.UUID, attempts: int) -> bool:
    failed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value, Job.attempts == attempts)
        .values(**_final(JobStatus.failed), error=gave_up_message(attempts))
    )
    return failed.rowcount == 1


def _finite(value: Any) -> Any:
    """NaN and infinities become null: PostgreSQL's JSON type rejects them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
