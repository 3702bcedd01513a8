"""The worker's Celery app: `celery -A worker.celery_app worker` and `balancer worker` pick up
`app`, which reads BALANCER_* variables and includes the task module (worker/tasks.py). The
app's settings are jobs/queue.py's. Importing this module must stay light: no torch, no CUDA
(the prefork pool forks task processes from this one, and CUDA cannot survive a fork)."""

from __future__ import annotations

from jobs.queue import create_celery
from jobs.settings import get_settings

app = create_celery(get_settings(), include=["worker.tasks"])
