"""The one task: run the pipeline for a job, moving its row queued -> running -> succeeded |
failed | canceled. The ML lives in pipeline/; this module only keeps the database in step.

Each attempt writes its outputs into a folder of its own (attempt-N), handed to the store
(jobs/storage/: renamed to out/, or uploaded to the object store) only when the whole
pipeline has finished, and the job turns succeeded only after that, together with the list
of stored files: a half-finished or killed attempt never looks finished, and a late worker
from an earlier attempt cannot write into the files of the current one.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import uuid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from sqlalchemy.orm import Session, sessionmaker

from jobs import state
from jobs.db import make_engine, make_sessionmaker
from jobs.models import JobStatus
from jobs.queue import TASK_NAME
from jobs.settings import Settings, get_settings
from jobs.state import Claim, LeaseLost
from jobs.storage import (
    ATTEMPT_PREFIX,
    Storage,
    StorageUnavailable,
    attempt_dir,
    job_dir,
    remove_path,
    remove_stale_scratch,
    storage_for,
)
from pipeline.builtin_datasets import builtin_zip, is_builtin
from pipeline.errors import DatasetError
from worker import observability
from worker.celery_app import app
from worker.lease import LeaseKeeper
from worker.progress import JobCanceled, ProgressWriter
from worker.warmup import start_warm_up, wait_for_warm_up

if TYPE_CHECKING:
    from pipeline.output_pool import OutputPool

log = logging.getLogger(__name__)


@lru_cache
def _sessions(url: str) -> sessionmaker[Session]:
    # Created on first use, i.e. inside the forked task process, never in the parent.
    return make_sessionmaker(make_engine(url))


# Writer processes for jobs' output files, where one process runs several jobs at once. At
# most MAX_WRITERS per worker process (a host runs one per GPU): a job's files and charts take
# about a second of CPU, so 4 keep up with far more jobs an hour than a GPU finishes.
_outputs: OutputPool | None = None
MAX_WRITERS = 4


@worker_process_init.connect
def _warm_up_task_process(**_: object) -> None:
    """In each new prefork task process (after the fork): pay the GPU's first-job costs now."""
    _start_job_process(jobs=1)


@worker_init.connect
def _warm_up_thread_worker(sender: object, **_: object) -> None:
    """The threads pool (several jobs at once, worker/pool.py) forks nothing: this process
    runs the jobs itself, so it gets ready here."""
    pool = getattr(sender, "pool_cls", "")
    if "thread" in str(getattr(pool, "__module__", pool)):
        _start_job_process(jobs=int(getattr(sender, "concurrency", 1) or 1))


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the CPUs this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _start_job_process(jobs: int) -> None:
    global _outputs
    settings = get_settings()
    if settings.storage_url:  # a killed worker's scratch on this host: old enough to be dead
        remove_stale_scratch(settings.jobs_dir, settings.visibility_timeout_s)
    if jobs > 1:
        from pipeline.output_pool import OutputPool

        _outputs = OutputPool(min(jobs, MAX_WRITERS, _usable_cpus()))
    if settings.warm_up:
        start_warm_up(jobs, _outputs)
    else:
        observability.set_warm_up("off")


@worker_process_shutdown.connect
def _forget_task_process(**_: object) -> None:
    observability.process_exiting()


@worker_shutdown.connect
def _stop_writers(**_: object) -> None:
    if _outputs is not None:
        _outputs.close()


@app.task(name=TASK_NAME)
def run_job(job_id: str) -> None:
    settings = get_settings()
    wait_for_warm_up()
    with observability.job_running():
        run(settings, _sessions(settings.database_url), uuid.UUID(job_id))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_gpu() -> str | None:
    """The GPU(s) this process may use, as `balancer worker --gpus` set them."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def run(settings: Settings, sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    claim = state.claim(
        sessions, job_id, worker_id(), settings.lease_s, settings.max_attempts, worker_gpu()
    )
    if claim is None:
        return
    log.info("job %s: running (attempt %d)", job_id, claim.attempt)
    storage = storage_for(settings)
    work = attempt_dir(settings, job_id, claim.attempt)
    _remove_other_attempts(settings, claim)
    hard_limit = settings.job_time_limit_s + 60  # as Celery's task_time_limit
    keeper = LeaseKeeper(
        sessions, claim, settings.lease_s, settings.heartbeat_interval_s, renew_for_s=hard_limit
    )
    try:
        with keeper:
            limit = settings.job_time_limit_s
            progress = ProgressWriter(keeper, settings.progress_interval_s, limit)
            upload = _fetch_dataset(settings, storage, claim)
            report = _run_pipeline(settings, claim, work, progress, upload)
            progress.check()  # still ours, and not cancelled, before anything is published
            artifacts = storage.publish(job_id, work, progress.check)
            progress.check()
    except LeaseLost:
        # The sweeper gave the job to another attempt: that one owns the row and the outputs.
        log.warning("job %s: attempt %d lost its lease; stopped", job_id, claim.attempt)
    except JobCanceled:
        _end(settings, sessions, claim, JobStatus.canceled, None)
    except SoftTimeLimitExceeded:
        msg = f"the job ran longer than the limit of {settings.job_time_limit_s} s and was stopped"
        _end(settings, sessions, claim, JobStatus.failed, msg)
    except DatasetError as exc:  # its message says what is wrong with the upload, and where
        _end(settings, sessions, claim, JobStatus.failed, str(exc))
    except StorageUnavailable as exc:  # says which store and what it answered
        _end(settings, sessions, claim, JobStatus.failed, f"the job stopped: {exc}")
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        _end(settings, sessions, claim, JobStatus.failed, _error_message(exc))
    else:
        # Scratch goes before the row turns succeeded: whoever sees the job done finds this
        # host's disk already clean (the outputs are in the store by now).
        storage.release_scratch(job_id, claim.attempt)
        if state.succeed(sessions, claim, report, artifacts):
            log.info("job %s: succeeded", job_id)
        else:  # lost between the last check and now; the newer attempt replaces the outputs
            log.warning("job %s: attempt %d finished after losing its lease", job_id, claim.attempt)
    finally:
        storage.release_scratch(job_id, claim.attempt)


def _run_pipeline(
    settings: Settings, claim: Claim, work: Path, progress: ProgressWriter, upload: Path
) -> dict:
    # Imported here, in the task's process: torch loads (and CUDA starts) after the fork.
    from pipeline.config import RunConfig
    from pipeline.run import run_pipeline

    return run_pipeline(
        upload,
        work,
        RunConfig.from_dict(claim.config),
        progress=progress,
        limits=settings.archive_limits(),
        outputs=_outputs,
    )


def _fetch_dataset(settings: Settings, storage: Storage, claim: Claim) -> Path:
    """A local path of the zip the job runs on: a built-in dataset (written on this host on
    first use), a stored dataset, or the upload of a job from before datasets."""
    dataset_id = claim.dataset_id
    if dataset_id is None:
        return storage.fetch_upload(claim.job_id, claim.attempt)
    if is_builtin(dataset_id):
        return builtin_zip(dataset_id, settings.builtin_dir)
    return storage.fetch_dataset(uuid.UUID(dataset_id), claim.job_id, claim.attempt)


def _remove_other_attempts(settings: Settings, claim: Claim) -> None:
    """Scratch of earlier attempts on this host belongs to workers that died or lost the job."""
    folder = job_dir(settings, claim.job_id)
    mine = attempt_dir(settings, claim.job_id, claim.attempt).name
    for stale in folder.glob(f"{ATTEMPT_PREFIX}*"):
        if stale.name not in {mine, f"{mine}.zip"}:
            remove_path(stale)


def _end(
    settings: Settings,
    sessions: sessionmaker[Session],
    claim: Claim,
    status: JobStatus,
    error: str | None,
) -> None:
    storage = storage_for(settings)
    storage.release_scratch(claim.job_id, claim.attempt)
    if not state.finish(sessions, claim, status, error):
        log.warning("job %s: attempt %d no longer holds the job", claim.job_id, claim.attempt)
        return
    # A failed or canceled job has no results; drop any left over from an earlier attempt.
    try:
        storage.discard_outputs(claim.job_id)
    except StorageUnavailable as exc:  # unreachable outputs of a failed job harm nobody
        log.warning("job %s: could not remove partial outputs: %s", claim.job_id, exc)
    log.info("job %s: %s%s", claim.job_id, status.value, f" ({error})" if error else "")


def _error_message(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the server ran out of disk space while running this job ({exc.strerror}); "
            "its partial outputs were removed. Try again later, or ask the operator to free "
            "space in the data directory"
        )
    return f"the job stopped with an error: {exc} ({type(exc).__name__})"
