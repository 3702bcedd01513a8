"""A terminal progress bar per pipeline stage, with an ETA for the stage."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from pipeline.run import STAGE_SPANS


class StageProgress:
    """Callable as the pipeline's progress callback: progress(stage, job_fraction)."""

    def __init__(self, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.stage: str | None = None
        self.stage_start = 0.0
        self.last_draw = 0.0
        self.tty = stream.isatty()

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if stage != self.stage:
            if self.stage is not None:
                self._draw(1.0, now, final=True)
            self.stage, self.stage_start = stage, now
        lo, hi = STAGE_SPANS[stage]
        within = (fraction - lo) / (hi - lo) if hi > lo else 1.0
        if now - self.last_draw >= (0.1 if self.tty else 5.0) or within >= 1.0:
            self._draw(within, now)

    def close(self) -> None:
        if self.stage is not None:
            self._draw(1.0, time.monotonic(), final=True)
            self.stage = None

    def abort(self) -> None:
        """End the current line without claiming the stage finished."""
        if self.stage is not None and self.tty:
            self.stream.write("\n")
        self.stage = None

    def _draw(self, within: float, now: float, final: bool = False) -> None:
        self.last_draw = now
        elapsed = now - self.stage_start
        filled = int(self.width * within)
        bar = "#" * filled + "-" * (self.width - filled)
        if final:
            tail = f"done in {elapsed:.1f}s"
        elif within > 0.02:
            tail = f"ETA {elapsed * (1 - within) / within:.0f}s"
        else:
            tail = ""
        line = f"{self.stage:<20} [{bar}] {within:4.0%} {tail}"
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + f"{line:<75}" + end)
        self.stream.flush()
