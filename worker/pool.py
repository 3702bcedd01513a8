"""How a worker process runs its jobs: one at a time in a forked child (prefork), or several
at once as threads of one process that share its GPU.

Several processes on one GPU only take turns on it (time-slicing: 4 to 16 processes gave
1.2-1.4x one process on an H200), while several jobs in one process, each on CUDA streams
of its own, run their kernels side by side. On a CPU there is nothing to share: one job per
process, as before.
"""

from __future__ import annotations

import os

# Jobs at once per GPU when BALANCER_GPU_JOBS is 0: chosen from bench/throughput.py on an
# H200 (docs/benchmarks.md, "Throughput").
DEFAULT_GPU_JOBS = 8


def jobs_at_once(configured: int) -> int:
    """BALANCER_GPU_JOBS if set (> 0), else DEFAULT_GPU_JOBS with a GPU visible, else 1."""
    if configured > 0:
        return configured
    return DEFAULT_GPU_JOBS if gpu_visible() else 1


def gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    import torch  # the parent never starts CUDA here: only the driver is asked

    return torch.cuda.is_available()


def pool_argv(jobs: int, processes: int = 1) -> list[str]:
    """Celery pool options: threads for several jobs at once (no fork: the process itself
    holds CUDA), else prefork: `processes` forked children, one job each (the CPU default)."""
    if jobs > 1:
        return ["--pool=threads", f"--concurrency={jobs}"]
    return ["--pool=prefork", f"--concurrency={processes}"]
