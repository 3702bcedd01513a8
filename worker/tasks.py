"""The one task: run the pipeline for a job, moving its row queued -> running -> succeeded |
failed | canceled. The ML lives in pipeline/; this module only keeps the database in step."""

from __future__ import annotations

import logging
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.models import JobStatus
from app.settings import Settings, get_settings
from app.storage import out_dir, upload_path
from pipeline.errors import DatasetError
from worker import jobstate
from worker.celery_app import TASK_NAME, app
from worker.progress import JobCanceled, ProgressWriter

log = logging.getLogger(__name__)


@lru_cache
def _sessions(url: str) -> sessionmaker[Session]:
    # Created on first use, i.e. inside the forked task process, never in the parent.
    return make_sessionmaker(make_engine(url))


@app.task(name=TASK_NAME)
def run_job(job_id: str) -> None:
    settings = get_settings()
    run(settings, _sessions(settings.database_url), uuid.UUID(job_id))


def run(settings: Settings, sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    job_config = jobstate.claim(sessions, job_id, settings.max_attempts)
    if job_config is None:
        return
    log.info("job %s: running", job_id)
    out = out_dir(settings, job_id)
    shutil.rmtree(out, ignore_errors=True)  # a re-delivered job starts clean
    try:
        report = _run_pipeline(settings, sessions, job_id, job_config)
    except JobCanceled:
        _fail(out, sessions, job_id, JobStatus.canceled, None)
    except SoftTimeLimitExceeded:
        msg = f"the job ran longer than the limit of {settings.job_time_limit_s} s and was stopped"
        _fail(out, sessions, job_id, JobStatus.failed, msg)
    except DatasetError as exc:  # its message says what is wrong with the upload, and where
        _fail(out, sessions, job_id, JobStatus.failed, str(exc))
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        msg = f"the job stopped with an error: {exc} ({type(exc).__name__})"
        _fail(out, sessions, job_id, JobStatus.failed, msg)
    else:
        jobstate.succeed(sessions, job_id, report)
        log.info("job %s: succeeded", job_id)


def _run_pipeline(
    settings: Settings, sessions: sessionmaker[Session], job_id: uuid.UUID, config: dict
) -> dict:
    # Imported here, in the task's process: torch loads (and CUDA starts) after the fork.
    from pipeline.config import RunConfig
    from pipeline.run import run_pipeline

    progress = ProgressWriter(sessions, job_id, settings.progress_interval_s)
    return run_pipeline(
        upload_path(settings, job_id),
        out_dir(settings, job_id),
        RunConfig.from_dict(config),
        progress=progress,
    )


def _fail(
    out: Path,
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    status: JobStatus,
    error: str | None,
) -> None:
    shutil.rmtree(out, ignore_errors=True)
    jobstate.finish(sessions, job_id, status, error)
    log.info("job %s: %s%s", job_id, status.value, f" ({error})" if error else "")
