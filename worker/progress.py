"""The pipeline's progress callback: write stage and progress to the job row (throttled) and
stop the pipeline when the job was cancelled."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.models import Job, JobStatus


class JobCanceled(Exception):
    """Raised from the progress callback; run_pipeline lets it through and cleans up."""


class ProgressWriter:
    def __init__(self, sessions: sessionmaker[Session], job_id: uuid.UUID, interval_s: float):
        self._sessions, self._job_id, self._interval = sessions, job_id, interval_s
        self._last_write = 0.0
        self._last_stage: str | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        # The callback comes every ~50 iterations; a DB round trip each time would be waste.
        if stage == self._last_stage and now - self._last_write < self._interval:
            return
        self._last_write, self._last_stage = now, stage
        if self._write(stage, min(max(fraction, 0.0), 1.0)):
            raise JobCanceled

    def _write(self, stage: str, fraction: float) -> bool:
        """Store the progress; True if the job should stop."""
        with self._sessions.begin() as session:
            session.execute(
                update(Job)
                .where(Job.id == self._job_id, Job.status == JobStatus.running.value)
                .values(stage=stage, progress=round(fraction, 4))
            )
            row = session.execute(
                select(Job.status, Job.cancel_requested).where(Job.id == self._job_id)
            ).first()
        return row is None or row.cancel_requested or row.status != JobStatus.running.value
