"""The app's lifespan: one sweeper (jobs/sweeper.py) per API process, sending through the
app's Celery, stopped at shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from jobs.queue import enqueue_job
from jobs.sweeper import Sweeper


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One sweeper per API process, stopped at shutdown."""
    state = app.state
    sweeper = Sweeper(state.sessionmaker, state.settings, lambda j: enqueue_job(state.celery, j))
    sweeper.start()
    try:
        yield
    finally:
        sweeper.stop()
