"""Keep a running job's lease alive while the pipeline works.

The lease is what tells the sweeper (jobs/sweeper.py) that the job's worker is alive: a lease
left to lapse means a dead worker, and the job is taken back and started again. So it is
renewed from a thread of its own, not only from the pipeline's progress callback: some steps
(loading a large zip, the bootstrap statistics, drawing the report) call back rarely or
never, and a busy but healthy job must not look dead. Progress writes ride on the same
guarded UPDATE, so a worker that lost its job finds out at its next progress callback.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from jobs import state
from jobs.state import Claim

log = logging.getLogger(__name__)
StopReason = Literal["lease-lost", "cancel"]


class LeaseKeeper:
    """Use as a context manager around the pipeline run; call `stop_reason()` to learn
    whether to stop, and `beat(stage, progress)` to store progress."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claim: Claim,
        lease_s: float,
        interval_s: float,
        renew_for_s: float | None = None,
    ) -> None:
        """renew_for_s: the thread stops renewing after this long, so a job hung past its
        hard time limit loses its lease and the sweeper takes it back (Celery kills a
        prefork child at that limit; a worker's threads pool cannot kill a thread)."""
        self._sessions, self._claim = sessions, claim
        self._lease_s, self._interval_s = lease_s, interval_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        now = time.monotonic()
        # The claim granted the lease; until it is renewed it lasts lease_s from about now.
        self._held_until = now + lease_s
        self._renewed_at = now
        self._lost = False
        self._cancel = False
        self._renew_until = None if renew_for_s is None else now + renew_for_s

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=self._interval_s + 35)  # a beat waits <= 30 s for SQLite

    def stop_reason(self) -> StopReason | None:
        if self._lost or time.monotonic() >= self._held_until:
            return "lease-lost"
        return "cancel" if self._cancel else None

    def beat(self, stage: str | None = None, progress: float | None = None) -> None:
        """Renew the lease if due, store the progress if given. Skipped (not queued) while
        the other thread is in the middle of a beat."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._beat(stage, progress)
        finally:
            self._lock.release()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s / 2):
            now = time.monotonic()
            if self._renew_until is not None and now >= self._renew_until:
                log.error(
                    "job %s: still running past its hard time limit; the lease is left to lapse",
                    self._claim.job_id,
                )
                return
            if now - self._renewed_at >= self._interval_s:
                self.beat()

    def _beat(self, stage: str | None, progress: float | None) -> None:
        if self._lost:
            return
        now = time.monotonic()
        due = now - self._renewed_at >= self._interval_s
        if not due and stage is None:
            return
        try:
            result = state.heartbeat(
                self._sessions, self._claim, self._lease_s if due else None, stage, progress
            )
        except SQLAlchemyError as exc:
            # The database is unreachable: keep working while the lease already granted
            # lasts (stop_reason() checks the clock); past that, another attempt may start.
            log.warning("job %s: heartbeat failed (%s)", self._claim.job_id, exc)
            return
        if not result.held:
            log.warning(
                "job %s: attempt %d no longer holds the job; stopping",
                self._claim.job_id,
                self._claim.attempt,
            )
            self._lost = True
            return
        if due:
            self._renewed_at, self._held_until = now, now + self._lease_s
        self._cancel = result.cancel_requested
