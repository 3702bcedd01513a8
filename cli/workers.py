"""How `balancer worker` starts Celery: the worker's arguments (worker_argv, also used by
`balancer serve` through `balancer worker`, and by the test stacks) and, with
`--gpus all|0,1,...`, one Celery worker process per GPU on this host.

Each child sees one GPU (CUDA_VISIBLE_DEVICES), runs BALANCER_GPU_JOBS jobs at once on it
(worker/pool.py; prefetch 1 per job slot, jobs/queue.py) and takes the same queues.
This process only supervises: TERM or Ctrl-C stops every child (warm: running jobs finish
first, for up to a minute); a child that exits ends the others too, so that a container or
systemd restarts the host's workers as one. The children share this process's group: killing
the group kills all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from worker.pool import DEFAULT_GPU_JOBS, pool_argv

POLL_S = 0.5
STOP_GRACE_S = 60.0


def worker_argv(queues: str, jobs: int, loglevel: str, processes: int = 1) -> list[str]:
    """Celery worker arguments for one process running `jobs` jobs at once (worker/pool.py:
    threads sharing the GPU for several; for one, `processes` forked children, which alone
    touch CUDA).
    No gossip/mingle/heartbeat: they are broadcasts the embedded broker lacks, and they only
    slow the start."""
    return [
        "worker",
        f"--queues={queues}",
        f"--loglevel={loglevel}",
        *pool_argv(jobs, processes),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def parse_gpus(spec: str) -> list[str]:
    """`all` = every GPU this process may see; else a comma-separated list of indexes or
    GPU UUIDs, as CUDA_VISIBLE_DEVICES takes them."""
    if spec.strip() == "all":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            gpus = [g.strip() for g in visible.split(",") if g.strip()]
        else:
            gpus = [str(i) for i in range(_device_count())]
        if not gpus:
            raise SystemExit("--gpus all: no GPU is visible on this host")
        return gpus
    gpus = [g.strip() for g in spec.split(",")]
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise SystemExit(f"--gpus {spec!r}: give 'all' or distinct ids, e.g. 0,1")
    return gpus


def _device_count() -> int:
    import torch  # only here: the supervisor itself never starts CUDA

    return torch.cuda.device_count()


def worker_commands(
    gpus: list[str], queues: str, loglevel: str, jobs: int = DEFAULT_GPU_JOBS
) -> list[tuple[list[str], str]]:
    """(argv, CUDA_VISIBLE_DEVICES) of each child; each runs `jobs` jobs at once."""
    base = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    return [
        (base + worker_argv(queues, jobs, loglevel) + [f"--hostname=gpu{gpu}@%h"], gpu)
        for gpu in gpus
    ]


def run_gpu_workers(gpus: list[str], queues: str, loglevel: str, jobs: int) -> int:
    from jobs.queue import declare_queues
    from jobs.settings import get_settings

    declare_queues(get_settings(), queues.split(","))  # before the workers race to create them
    children = []
    for argv, gpu in worker_commands(gpus, queues, loglevel, jobs):
        env = os.environ | {"CUDA_VISIBLE_DEVICES": gpu}
        # Same process group as this one: a kill of the group (a host's death, a container
        # stop) reaches every worker, and Ctrl-C reaches them from the terminal.
        children.append(subprocess.Popen(argv, env=env))
    print(f"balancer worker: {len(children)} worker(s), GPUs {','.join(gpus)}", flush=True)
    stopping: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    code = 0
    while not stopping:
        ended = [p for p in children if p.poll() is not None]
        if ended:
            code = ended[0].returncode or 1  # one worker gone: restart the host's set
            print(f"balancer worker: pid {ended[0].pid} exited ({code}); stopping", flush=True)
            break
        time.sleep(POLL_S)
    if signal.SIGINT not in stopping:  # Ctrl-C reached them already; twice is a cold stop
        for proc in children:  # warm shutdown of all at once: running jobs finish
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
    for proc in children:
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # its job's message goes back to the queue (acks_late)
            proc.wait()
    return code
