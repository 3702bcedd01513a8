"""Per-worker Prometheus figures, served by `balancer worker --metrics-port P`: jobs in
progress, GPU memory PyTorch holds now and at its peak (0 on a CPU), and the warm-up state.

Jobs run in Celery's forked pool processes, which set these figures; the worker's main
process serves them (worker/metrics_server.py) in prometheus_client's multiprocess mode.
Without --metrics-port they stay in each process, unread.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

from prometheus_client import Gauge

GPU_SAMPLE_S = 1.0
WARM_UP_STATES = ("off", "running", "done", "skipped", "failed")

# livesum/livemax: only processes alive now count (a dead process's files are dropped).
JOBS_IN_PROGRESS = Gauge(
    "balancer_worker_jobs_in_progress",
    "Jobs this worker is running now",
    multiprocess_mode="livesum",
)
GPU_MEMORY = Gauge(
    "balancer_worker_gpu_memory_bytes",
    "GPU memory PyTorch's allocator holds in this worker's processes (0 on a CPU)",
    multiprocess_mode="livesum",
)
GPU_MEMORY_PEAK = Gauge(
    "balancer_worker_gpu_memory_peak_bytes",
    "Most GPU memory PyTorch's allocator has held in one process since it started",
    multiprocess_mode="livemax",
)
WARM_UP = Gauge(
    "balancer_worker_warm_up",
    "Pool processes per warm-up state: off, running, done, skipped (CPU), failed",
    ["state"],
    multiprocess_mode="livesum",
)
WARM_UP_SECONDS = Gauge(
    "balancer_worker_warm_up_seconds",
    "How long the GPU warm-up took (0: not run)",
    multiprocess_mode="livemax",
)


def set_warm_up(state: str, seconds: float | None = None) -> None:
    for name in WARM_UP_STATES:
        WARM_UP.labels(name).set(1 if name == state else 0)
    if seconds is not None:
        WARM_UP_SECONDS.set(seconds)
    sample_gpu_memory()


@contextlib.contextmanager
def job_running() -> Iterator[None]:
    """Count the job as in progress and sample the GPU's memory every second while it runs."""
    JOBS_IN_PROGRESS.inc()
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_until, args=(stop,), name="balancer-gpu-memory")
    sampler.daemon = True
    sampler.start()
    try:
        yield
    finally:
        stop.set()
        sampler.join()
        sample_gpu_memory()
        JOBS_IN_PROGRESS.dec()


def sample_gpu_memory() -> None:
    """Never starts CUDA: a process that has not used the GPU holds none of its memory."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        GPU_MEMORY.set(0)
        return
    GPU_MEMORY.set(torch.cuda.memory_reserved())
    GPU_MEMORY_PEAK.set(torch.cuda.max_memory_reserved())


def process_exiting() -> None:
    """A pool process's last word: its live figures no longer count."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), folder)


def _sample_until(stop: threading.Event) -> None:
    while not stop.wait(GPU_SAMPLE_S):
        sample_gpu_memory()
