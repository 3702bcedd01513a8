"""The job queue: the Celery app built from Settings, and how a job's message is sent.

The API and the sweeper send (enqueue_job: by the task's name, without importing the task);
worker/celery_app.py builds the worker's app with create_celery, its task module included.
Importing this module must stay light: no torch, no CUDA. The prefork pool forks task
processes from the worker's process, and CUDA cannot survive a fork."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery

from jobs.settings import Settings

TASK_NAME = "balancer.run_job"


def create_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """The Celery app; `include`: the task modules a worker imports at start (none to send)."""
    celery = Celery("balancer", broker=settings.broker_url, include=list(include))
    celery.conf.update(
        task_routes={TASK_NAME: {"queue": settings.queue}},
        task_default_queue=settings.queue,
        # A job's message is acknowledged when the job ends, and handed back when the task's
        # process dies (OOM kill, SIGKILL). A redelivered message cannot start a job twice or
        # loop forever: a worker claims only a queued job (jobs/state.py), so the copy
        # of a running job is dropped; the sweeper (jobs/sweeper.py) re-queues a job whose
        # worker's lease lapsed at most max_attempts times, then fails it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One job per process at a time; never reserve a second job while the GPU is busy.
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        # The jobs table is the authority on state; no result backend.
        task_ignore_result=True,
        task_soft_time_limit=settings.job_time_limit_s,
        task_time_limit=settings.job_time_limit_s + 60,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        # The SQLAlchemy transport has no fanout, which remote control needs.
        worker_enable_remote_control=not is_embedded_broker(settings.broker_url),
    )
    return celery


def is_embedded_broker(url: str) -> bool:
    return url.startswith(("sqla+", "sqlalchemy+"))


def _transport_options(settings: Settings) -> dict[str, Any]:
    if is_embedded_broker(settings.broker_url):
        # These options go to SQLAlchemy's create_engine: wait for SQLite's write lock.
        return {"connect_args": {"timeout": 30}}
    # Redis hands an unacknowledged message to another worker after this many seconds, and
    # with acks_late a job's message stays unacknowledged while the job runs. So it is set
    # above the longest job (job_time_limit_s + 1 h by default; Settings refuses less), or
    # every long job would be delivered a second time. Even then nothing would run twice (a
    # worker claims only queued jobs; the copy is dropped at once), and recovering from a dead
    # worker does not wait for this timeout: the sweeper re-queues the job once its lease
    # lapses (lease_s, about a minute).
    return {"visibility_timeout": settings.visibility_timeout_s}


def enqueue_job(celery: Celery, job_id: uuid.UUID) -> None:
    # By name: the API need not import the task module (and what it imports).
    celery.send_task(TASK_NAME, args=[str(job_id)], retry_policy={"max_retries": 2})


def declare_queues(settings: Settings, names: Sequence[str]) -> None:
    """Declare the queues once, before several workers start on them together. kombu's
    SQLAlchemy transport (the embedded broker) creates a queue's row by a read, then an
    insert, so two workers starting at the same moment could both insert it and one would
    die on the unique name (seen with `balancer worker --gpus 0,1`)."""
    from kombu import Queue

    with create_celery(settings).connection_for_write() as conn:
        for name in names:
            Queue(name, channel=conn.default_channel).declare()
