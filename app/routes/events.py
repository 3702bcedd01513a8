"""GET /v1/jobs/{id}/events: a job's progress as Server-Sent Events, until the job ends.

The handler polls the job row; each poll opens a session of its own and closes it before
sleeping, so a stream that stays open for hours holds no database connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentOwner, SessionDep
from app.problems import ProblemError, problem_responses
from app.routes.jobs import JobId
from app.schemas import eta_seconds
from jobs import crud
from jobs.models import FINISHED

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_S = 0.5
KEEPALIVE_S = 15.0
FINISHED_VALUES = {s.value for s in FINISHED}
PROGRESS_KEYS = ("status", "stage", "progress", "eta_seconds")
EVENTS_EXAMPLE = (
    'event: progress\ndata: {"status": "running", "stage": "training_gan", '
    '"progress": 0.31, "eta_seconds": 84}\n\n'
    ": keep-alive\n\n"
    'event: end\ndata: {"status": "succeeded", "error": null}\n\n'
)
DESCRIPTION = """A `text/event-stream` that follows the job:

- `progress`: `{status, stage, progress, eta_seconds}`, sent at once and whenever the status,
  stage or progress changes (checked every 0.5 s);
- a comment line (`: keep-alive`) after 15 s without an event, so proxies keep it open;
- `end`: `{status, error}` once the job has ended (`status` is `deleted` if the job was
  deleted meanwhile); then the stream closes.

Where the service sets BALANCER_EVENTS_MAX_S, a stream closes after that many seconds without
`end`: connect again (EventSource does by itself).
"""

Snapshot = dict[str, Any]


@router.get(
    "/{job_id}/events",
    summary="Follow a job's progress live (Server-Sent Events)",
    description=DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"example": EVENTS_EXAMPLE}}},
        **problem_responses(401, 404, 503),
    },
)
async def job_events(
    job_id: JobId, request: Request, owner: CurrentOwner, auth_session: SessionDep
) -> StreamingResponse:
    # The session that authenticated the key would live as long as the stream: close it now.
    await run_in_threadpool(auth_session.close)
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    job_uuid = _parse_id(job_id)
    first = await run_in_threadpool(snapshot, sessions, job_uuid, owner) if job_uuid else None
    if job_uuid is None or first is None:
        raise ProblemError(404, "job-not-found", "Job not found", f"no job with id {job_id}")
    max_s = request.app.state.settings.events_max_s
    return StreamingResponse(
        _stream(request, sessions, job_uuid, first, max_s),
        media_type="text/event-stream",
        # no-transform and X-Accel-Buffering: proxies must pass each event on at once.
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


def snapshot(
    sessions: sessionmaker[Session], job_id: uuid.UUID, owner: str | None = None
) -> Snapshot | None:
    """The job's progress fields now, from a session that is closed on return; with `owner`,
    None unless that owner's job."""
    with sessions() as session:
        if owner is None:
            job = crud.get_job(session, job_id)
        else:
            job = crud.get_owned_job(session, job_id, owner)
        if job is None:
            return None
        return {
            "status": job.status,
            "stage": job.stage,
            "progress": job.progress,
            "eta_seconds": eta_seconds(job),
            "error": job.error,
        }


async def _stream(
    request: Request,
    sessions: sessionmaker[Session],
    job_id: uuid.UUID,
    state: Snapshot,
    max_s: float = 0.0,
) -> AsyncIterator[str]:
    yield _progress_event(state)
    opened = last_write = time.monotonic()
    while state["status"] not in FINISHED_VALUES:
        await asyncio.sleep(POLL_S)
        if await request.is_disconnected():
            return
        if max_s and time.monotonic() - opened >= max_s:
            return  # the client connects again
        new = await _poll(sessions, job_id, state)
        if new is None:
            yield _event("end", {"status": "deleted", "error": None})
            return
        if _changed(state, new):
            yield _progress_event(new)
            last_write = time.monotonic()
        elif time.monotonic() - last_write >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_write = time.monotonic()
        state = new
    yield _event("end", {"status": state["status"], "error": state["error"]})


async def _poll(
    sessions: sessionmaker[Session], job_id: uuid.UUID, state: Snapshot
) -> Snapshot | None:
    """The new snapshot; the old one if the database is briefly unreachable."""
    try:
        return await run_in_threadpool(snapshot, sessions, job_id)
    except SQLAlchemyError as exc:
        log.warning("events for job %s: database error, retrying: %r", job_id, exc)
        return state


def _changed(old: Snapshot, new: Snapshot) -> bool:
    # Not eta_seconds: it moves with the clock and would make every poll an event.
    return any(old[k] != new[k] for k in ("status", "stage", "progress"))


def _progress_event(state: Snapshot) -> str:
    return _event("progress", {k: state[k] for k in PROGRESS_KEYS})


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _parse_id(job_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None
