"""The Celery app, built from Settings. Importing this module must stay light: no torch, no
CUDA. The prefork pool forks task processes from this one, and CUDA cannot survive a fork."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery

from app.settings import Settings, get_settings

TASK_NAME = "balancer.run_job"


def create_celery(settings: Settings) -> Celery:
    celery = Celery("balancer", broker=settings.broker_url, include=["worker.tasks"])
    celery.conf.update(
        task_routes={TASK_NAME: {"queue": settings.queue}},
        task_default_queue=settings.queue,
        # A job is acknowledged when it ends, so a worker that dies mid-job hands it back.
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
    # Redis hands an unacknowledged message to another worker after this many seconds.
    return {"visibility_timeout": settings.visibility_timeout_s}


def enqueue_job(celery: Celery, job_id: uuid.UUID) -> None:
    # By name: the API need not import the task module (and what it imports).
    celery.send_task(TASK_NAME, args=[str(job_id)], retry_policy={"max_retries": 2})


# `celery -A worker.celery_app worker` picks this up; it reads BALANCER_* variables.
app = create_celery(get_settings())
