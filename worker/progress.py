"""The pipeline's progress callback: store stage and progress (throttled) through the lease
keeper, and stop the pipeline when the job was cancelled or this worker lost it."""

from __future__ import annotations

import time

from worker.jobstate import LeaseLost
from worker.lease import LeaseKeeper


class JobCanceled(Exception):
    """Raised from the progress callback; run_pipeline lets it through and cleans up."""


class ProgressWriter:
    def __init__(self, keeper: LeaseKeeper, interval_s: float) -> None:
        self._keeper, self._interval = keeper, interval_s
        self._last_write = 0.0
        self._last_stage: str | None = None

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
        """Raise LeaseLost or JobCanceled if the pipeline must stop."""
        reason = self._keeper.stop_reason()
        if reason == "lease-lost":
            raise LeaseLost
        if reason == "cancel":
            raise JobCanceled
