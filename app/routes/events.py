"""GET /v1/jobs/{id}/events: a job's progress as Server-Sent Events, until the job ends.

One `JobWatch` per API process polls for all open streams: every 0.5 s it reads the rows of
the jobs that have streams in one query, on one thread-pool thread with a session closed right
after, and wakes the streams. So N open streams cost one query per 0.5 s, not N, and a stream
that stays open for hours holds no database connection and no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.deps import CurrentOwner, SessionsDep
from app.problems import ProblemError, problem_responses
from app.routes.jobs import JobId
from app.schemas import eta_seconds
from jobs import crud
from jobs.models import FINISHED, Job

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

POLL_S = 0.5
KEEPALIVE_S = 15.0
IDS_PER_QUERY = 500  # far below any database's limit of bound parameters
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
    job_id: JobId, request: Request, owner: CurrentOwner, sessions: SessionsDep
) -> StreamingResponse:
    job_uuid = _parse_id(job_id)
    first = await run_in_threadpool(snapshot, sessions, job_uuid, owner) if job_uuid else None
    if job_uuid is None or first is None:
        raise ProblemError(404, "job-not-found", "Job not found", f"no job with id {job_id}")
    max_s = request.app.state.settings.events_max_s
    watch: JobWatch = request.app.state.job_watch
    return StreamingResponse(
        _stream(request, watch, job_uuid, first, max_s),
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


def snapshots(sessions: sessionmaker[Session], job_ids: Iterable[uuid.UUID]) -> dict:
    """{job id: its progress fields now} for those of `job_ids` that exist, read in as few
    queries as IDS_PER_QUERY allows, from a session closed on return."""
    ids, found = list(job_ids), {}
    columns = (Job.id, Job.status, Job.stage, Job.progress, Job.error, Job.started_at)
    with sessions() as session:
        for at in range(0, len(ids), IDS_PER_QUERY):
            query = select(*columns).where(Job.id.in_(ids[at : at + IDS_PER_QUERY]))
            for row in session.execute(query):
                found[row.id] = {
                    "status": row.status,
                    "stage": row.stage,
                    "progress": row.progress,
                    "eta_seconds": eta_seconds(row),  # type: ignore[arg-type] (same fields)
                    "error": row.error,
                }
    return found


class JobWatch:
    """Polls the jobs that have open event streams, for all of them at once: every POLL_S one
    `snapshots` call in the thread pool, then every waiting stream wakes and reads its job's
    latest snapshot. The polling task runs only while some stream is open. One per app (and
    event loop: a test's second loop gets a fresh start)."""

    def __init__(self, sessions: sessionmaker[Session], poll_s: float = POLL_S) -> None:
        self._sessions, self.poll_s = sessions, poll_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[uuid.UUID, int] = {}  # job id -> open streams
        self._latest: dict[uuid.UUID, Snapshot | None] = {}  # None: the job is gone
        self._tick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, job_id: uuid.UUID) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # state of another (closed) loop is of no use here
            self._loop, self._task, self._tick = loop, None, asyncio.Event()
        self._streams[job_id] = self._streams.get(job_id, 0) + 1
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="job-events-poller")

    def unsubscribe(self, job_id: uuid.UUID) -> None:
        left = self._streams.get(job_id, 0) - 1
        if left > 0:
            self._streams[job_id] = left
        else:
            self._streams.pop(job_id, None)
            self._latest.pop(job_id, None)

    async def next(self, job_id: uuid.UUID, state: Snapshot) -> Snapshot | None:
        """After the next poll (or POLL_S x 4 if a poll is slow): the job's latest snapshot,
        None if it is gone, `state` if it has not been read yet or the database failed."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._tick.wait(), self.poll_s * 4)
        return self._latest.get(job_id, state)

    async def _run(self) -> None:
        while self._streams:
            await asyncio.sleep(self.poll_s)
            ids = list(self._streams)
            try:
                found = await run_in_threadpool(snapshots, self._sessions, ids)
            except SQLAlchemyError as exc:  # streams keep their last state and retry
                log.warning("events: database error, retrying: %r", exc)
            else:
                for job_id in ids:
                    if job_id in self._streams:
                        self._latest[job_id] = found.get(job_id)
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()


async def _stream(
    request: Request,
    watch: JobWatch,
    job_id: uuid.UUID,
    state: Snapshot,
    max_s: float = 0.0,
) -> AsyncIterator[str]:
    yield _progress_event(state)
    opened = last_write = time.monotonic()
    watch.subscribe(job_id)
    try:
        while state["status"] not in FINISHED_VALUES:
            new = await watch.next(job_id, state)
            if await request.is_disconnected():
                return
            if max_s and time.monotonic() - opened >= max_s:
                return  # the client connects again
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
    finally:
        watch.unsubscribe(job_id)
    yield _event("end", {"status": state["status"], "error": state["error"]})


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
