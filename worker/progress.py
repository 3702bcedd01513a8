"""The pipeline's progress callback: store stage and progress (throttled) through the lease
keeper, and stop the pipeline when the job was cancelled or this worker lost it."""

from __future__ import annotations

import time

from celery.exceptions import SoftTimeLimitExceeded

from jobs.state import LeaseLost
from worker.lease import LeaseKeeper


class JobCanceled(Exception):
    """Raised from the progress callback; run_pipeline lets it through and cleans up."""


class ProgressWriter:
    """time_limit_s: past it, the next callback stops the job (SoftTimeLimitExceeded, as
    Celery's signal-based limit raises in a prefork child; the threads pool has none)."""

    def __init__(
        self, keeper: LeaseKeeper, interval_s: float, time_limit_s: float | None = None
    ) -> None:
        self._keeper, self._interval = keeper, interval_s
        self._last_write = 0.0
        self._last_stage: str | None = None
        start = time.monotonic()
        self._deadline = None if time_limit_s is None else start + time_limit_s

    def __call__(self, stage: str, fraction: float) -> None:
        self.check()
        now = time.monotonic()
        # The callback comes every ~50 iterations; a DB round trip each time would be waste.
        if stage == self._last_stage and now - self._last_write < self._interval:
            return
        self._last_write, self._last_stage = now, stage
        self._keeper.beat(stage, min(max(fraction, 0.0), 1.0))
        self.check()

    def check(self) -> None:
        """Raise LeaseLost, JobCanceled or SoftTimeLimitExceeded if the pipeline must stop."""
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise SoftTimeLimitExceeded
        reason = self._keeper.stop_reason()
        if reason == "lease-lost":
            raise LeaseLost
        if reason == "cancel":
            raise JobCanceled
