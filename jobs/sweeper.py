"""The sweeper: takes back jobs whose worker died and re-sends messages a broker lost. It
finds them; the transitions themselves (take_back, resend) are jobs/state.py's.

- A running job whose lease lapsed (its worker stopped renewing it: killed, out of memory,
  machine gone) goes back to queued and its message is sent again, up to `max_attempts`
  starts; then it is failed with a clear error. A cancel requested meanwhile is honoured.
- A queued job whose message was handed to the broker more than `resend_queued_after_s` ago
  and that no worker has claimed is sent again: a Redis restarted without persistence, or
  the embedded broker's messages taken by a worker that then died, are lost otherwise.
- Every `orphan_sweep_interval_s`, stored files (jobs/storage/) of jobs and datasets that no
  longer exist are deleted: a DELETE while the object store was down, an API killed between
  storing an upload and creating its job or dataset row. Only files untouched for
  `orphan_grace_s`: an upload is stored a moment before its row is committed.

Where it runs: a daemon thread in every API process, started by the app's lifespan. The API
is the one part that is up whenever anyone cares about a job, and it needs no extra process
(Celery beat would be one more thing to deploy and keep alive). It cannot run in the worker:
the point is recovering from dead workers, and with every worker dead nothing would sweep.
Several API replicas may sweep at once safely: each change is a guarded UPDATE (status,
attempts and lease or send time as last read), so only one replica wins each transition and
only the winner sends. A duplicate message would be harmless anyway: a worker claims only a
queued job, so a message for a running or finished job does nothing.

Lease times are compared with this host's clock against the worker host's: keep hosts'
clocks in sync (NTP); a skew must stay far below `lease_s`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from jobs import state
from jobs.metrics import record_finish
from jobs.models import Dataset, Job, JobStatus, utcnow
from jobs.settings import Settings
from jobs.storage import StorageUnavailable, storage_for

log = logging.getLogger(__name__)
BATCH = 100  # jobs per sweep and kind; the next sweep takes the rest
Send = state.Send


@dataclass
class SweepReport:
    requeued: int = 0
    failed: int = 0
    canceled: int = 0
    resent: int = 0


def sweep(
    sessions: sessionmaker[Session], settings: Settings, send: Send, now: datetime | None = None
) -> SweepReport:
    now = now or utcnow()
    report = SweepReport()
    for job_id, attempts, cancel in _lapsed(sessions, now):
        outcome = state.take_back(sessions, job_id, attempts, cancel, settings.max_attempts, now)
        if outcome == "requeued":
            state.send_or_mark(sessions, send, job_id, None)
        elif outcome:
            _remove_outputs(settings, job_id)
            with sessions() as session:
                record_finish(session, job_id, outcome)
        if outcome:
            setattr(report, outcome, getattr(report, outcome) + 1)
    cutoff = now - timedelta(seconds=settings.resend_queued_after_s)
    for job_id, enqueued_at in _unclaimed(sessions, cutoff):
        report.resent += state.resend(sessions, send, job_id, enqueued_at, now)
    return report


def _lapsed(sessions: sessionmaker[Session], now: datetime) -> list[tuple[uuid.UUID, int, bool]]:
    query = (
        select(Job.id, Job.attempts, Job.cancel_requested)
        .where(Job.status == JobStatus.running.value, state.lease_lapsed(now))
        .limit(BATCH)
    )
    with sessions() as session:
        return [(r.id, r.attempts, r.cancel_requested) for r in session.execute(query)]


def _unclaimed(
    sessions: sessionmaker[Session], cutoff: datetime
) -> list[tuple[uuid.UUID, datetime | None]]:
    query = (
        select(Job.id, Job.enqueued_at)
        .where(Job.status == JobStatus.queued.value, Job.cancel_requested.is_(False))
        .where(or_(Job.enqueued_at < cutoff, Job.enqueued_at.is_(None)))
        .order_by(Job.created_at)
        .limit(BATCH)
    )
    with sessions() as session:
        return [(r.id, r.enqueued_at) for r in session.execute(query)]


def _remove_outputs(settings: Settings, job_id: uuid.UUID) -> None:
    """A failed or canceled job has no results: drop what its attempts left."""
    try:
        storage_for(settings).discard_outputs(job_id)
    except StorageUnavailable as exc:  # harmless leftovers of a failed job
        log.warning("job %s: could not remove partial outputs: %s", job_id, exc)


def sweep_orphans(sessions: sessionmaker[Session], settings: Settings, now: datetime) -> int:
    """Delete the stored files of jobs and datasets that have no row; returns how many."""
    storage = storage_for(settings)
    cutoff = now - timedelta(seconds=settings.orphan_grace_s)
    removed = 0
    for kind, stored, model, delete in (
        ("job", storage.stored_jobs(cutoff), Job, storage.delete_job),
        ("dataset", storage.stored_datasets(cutoff), Dataset, storage.delete_dataset),
    ):
        if not stored:
            continue
        with sessions() as session:
            rows = session.scalars(select(model.id).where(model.id.in_(stored)))
            orphans = stored - set(rows)
        for orphan in orphans:
            delete(orphan)
        if orphans:
            log.warning("removed the stored files of %d deleted %s(s)", len(orphans), kind)
        removed += len(orphans)
    return removed


class Sweeper:
    """Runs `sweep` every `settings.sweep_interval_s` in a daemon thread."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, send: Send) -> None:
        self._sessions, self._settings, self._send = sessions, settings, send
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)

    def start(self) -> None:
        if self._settings.sweep_interval_s > 0:
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        orphans_swept_at = time.monotonic()  # not at start-up: replicas start together
        while not self._stop.wait(self._settings.sweep_interval_s):
            try:
                report = sweep(self._sessions, self._settings, self._send)
                interval = self._settings.orphan_sweep_interval_s
                if interval and time.monotonic() - orphans_swept_at >= interval:
                    orphans_swept_at = time.monotonic()
                    sweep_orphans(self._sessions, self._settings, utcnow())
            except (SQLAlchemyError, StorageUnavailable) as exc:  # down: try again next time
                log.warning("sweep failed: %s", exc)
            except Exception:
                log.exception("sweep failed")
            else:
                if report != SweepReport():
                    log.info("sweep: %s", report)
