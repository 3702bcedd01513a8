"""Warm each worker process up in the background as soon as it starts.

Celery gives a new pool process a few seconds to report ready (worker_proc_alive_timeout), so
the warm-up runs in a thread of the task process, after the fork (CUDA must never start in
the parent). A job that arrives meanwhile waits for it: two first-time CUDA initialisations
racing would only be slower.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from worker import observability

if TYPE_CHECKING:
    from pipeline.output_pool import OutputPool

log = logging.getLogger(__name__)
_done = threading.Event()
_done.set()  # nothing to wait for unless a warm-up was started


def start_warm_up(jobs: int = 1, outputs: OutputPool | None = None) -> None:
    """Warm up in the background for `jobs` jobs at once (and the output writers)."""
    _done.clear()
    observability.set_warm_up("running")
    threading.Thread(
        target=_warm_up, args=(jobs, outputs), name="balancer-warm-up", daemon=True
    ).start()


def wait_for_warm_up(timeout_s: float = 600.0) -> None:
    if not _done.wait(timeout_s):
        log.warning("warm-up still running after %.0f s; starting the job anyway", timeout_s)


def _warm_up(jobs: int, outputs: OutputPool | None) -> None:
    try:
        from pipeline.warmup import warm_up

        seconds = warm_up(jobs=jobs, outputs=outputs)
        if seconds:
            log.info("worker warmed up on the GPU in %.1f s", seconds)
        observability.set_warm_up("done" if seconds else "skipped", seconds)
    except Exception:  # a failed warm-up must not stop the worker: the job will try for real
        log.exception("warm-up failed")
        observability.set_warm_up("failed")
    finally:
        _done.set()
