"""The job state machine: every change of a job row's status, and who makes it. Each
transition is one guarded UPDATE whose row count says whether it happened:

    queued  -> running                        claim           worker (attempts += 1: the fence)
    queued  -> failed                         claim           worker, out of attempts
    running -> running                        heartbeat       worker: lease, progress
    running -> succeeded | failed | canceled  succeed/finish  worker (only the fence holder)
    running -> queued | failed | canceled     take_back       sweeper, once the lease lapsed
    queued  -> queued (sent again)            resend          sweeper, message not claimed
    queued  -> canceled                       cancel_if_queued  API
    running (cancel requested)                request_cancel  API; the worker then finishes

A job row is inserted (queued) by jobs/submit.py and deleted by the API (jobs/crud.py).
`attempts` is the fencing token: a worker whose job was taken back and started again
(attempts moved on) matches no row, so it can neither overwrite the new attempt's progress
nor finish the job. The sweeper and the API's replicas race each other safely the same way:
only one UPDATE wins each transition, and only the winner sends a message or counts the end.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.metrics import record_finish
from jobs.models import Artifact, ClassReport, Job, JobStatus, utcnow
from jobs.storage import StoredArtifact

log = logging.getLogger(__name__)
Send = Callable[[uuid.UUID], None]  # sends a job's message to the queue (jobs/queue.py)


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


# --- the sweeper's: a job whose worker died, a message the broker lost ---------------------


def lease_lapsed(now: datetime):  # noqa: ANN202 (a SQL condition)
    # No lease at all: started by a worker from before leases existed, gone after an upgrade.
    return or_(Job.lease_expires_at < now, Job.lease_expires_at.is_(None))


def take_back(
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    attempts: int,
    cancel: bool,
    max_attempts: int,
    now: datetime,
) -> str | None:
    """running -> canceled | failed | queued (the sweeper, once the lease lapsed), if nobody
    renewed or ended the job since we looked; returns which ("requeued" for queued), or None.
    The caller sends a requeued job's message (send_or_mark), or drops an ended job's
    outputs and counts it."""
    if cancel:
        outcome, values = "canceled", _ended(JobStatus.canceled, None, now)
    elif attempts >= max_attempts:
        outcome, values = "failed", _ended(JobStatus.failed, gave_up_message(attempts), now)
    else:
        outcome = "requeued"
        values = {
            "status": JobStatus.queued.value,
            "stage": None,
            "progress": 0.0,
            "worker_id": None,
            "lease_expires_at": None,
            "enqueued_at": now,
        }
    guarded = update(Job).where(
        Job.id == job_id,
        Job.status == JobStatus.running.value,
        Job.attempts == attempts,  # the attempt we judged dead, not a newer one
        lease_lapsed(now),  # and it did not renew its lease meanwhile
    )
    with sessions.begin() as session:
        if session.execute(guarded.values(**values)).rowcount != 1:
            return None
    log.warning("job %s: lease of attempt %d lapsed; %s", job_id, attempts, outcome)
    return outcome


def resend(
    sessions: sessionmaker[Session],
    send: Send,
    job_id: uuid.UUID,
    enqueued_at: datetime | None,
    now: datetime,
) -> int:
    """queued -> queued with a new send time, and the job's message sent again (the sweeper,
    for a job nobody claimed); the guarded UPDATE makes one sweeper of many do it. Returns 1
    if sent, else 0."""
    guarded = update(Job).where(
        Job.id == job_id,
        Job.status == JobStatus.queued.value,
        Job.enqueued_at.is_not_distinct_from(enqueued_at),
    )
    with sessions.begin() as session:
        if session.execute(guarded.values(enqueued_at=now)).rowcount != 1:
            return 0
    log.warning("job %s: queued since %s and not claimed; message sent again", job_id, enqueued_at)
    return int(send_or_mark(sessions, send, job_id, enqueued_at))


def send_or_mark(
    sessions: sessionmaker[Session], send: Send, job_id: uuid.UUID, previous: datetime | None
) -> bool:
    """Send; if the broker is down, put the send time back so that the next sweep retries."""
    try:
        send(job_id)
        return True
    except Exception as exc:  # any broker failure: the job stays queued, retried next sweep
        log.warning("job %s: could not send its message (%s); retrying next sweep", job_id, exc)
        with sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued.value)
                .values(enqueued_at=previous)
            )
        return False


def _ended(status: JobStatus, error: str | None, now: datetime) -> dict[str, object]:
    return {"status": status.value, "error": error, "finished_at": now, "lease_expires_at": None}


def gave_up_message(attempts: int) -> str:
    return (
        f"the worker running this job stopped responding {attempts} "
        f"time{'s' if attempts != 1 else ''} (killed, out of memory, or its machine "
        "restarted?); giving up"
    )


# --- the API's: cancel --------------------------------------------------------------------


def cancel_if_queued(session: Session, job_id: uuid.UUID) -> bool:
    """Cancel a job no worker has started; False if it is no longer queued."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued.value)
        .values(status=JobStatus.canceled.value, cancel_requested=True, finished_at=utcnow())
    )
    done = session.execute(stmt).rowcount == 1
    session.commit()
    if done:
        record_finish(session, job_id, JobStatus.canceled.value)
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
