"""The cheap paths that keep the API fast under many clients (issue 25), in process on SQLite:
the per-process cache of verified API keys (a revoked key is refused once its entry is older
than `api_key_cache_s`) and the one poller shared by all event streams."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from app.auth import KeyCache, authenticate, create_key, revoke_key
from app.main import create_app
from app.routes.events import JobWatch, _stream, snapshots
from jobs.models import ApiKey, Base, Job, JobStatus
from jobs.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.timeout(60)
TTL_S = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    app = create_app(Settings(data_dir=tmp_path, database_url="", broker_url=""))
    Base.metadata.create_all(app.state.engine)
    yield app
    app.state.engine.dispose()


@pytest.fixture
def sessions(app: FastAPI) -> sessionmaker[Session]:
    return app.state.sessionmaker


def count_queries(app: FastAPI) -> list[str]:
    seen: list[str] = []
    event.listen(app.state.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def new_job(sessions: sessionmaker[Session], owner: str, **values: object) -> uuid.UUID:
    job_id = uuid.uuid4()
    with sessions.begin() as session:
        session.add(Job(id=job_id, config={}, owner=owner, **values))
    return job_id


def test_a_cached_key_needs_no_query_and_a_revoked_one_is_refused_after_the_ttl(
    app: FastAPI, sessions: sessionmaker[Session]
) -> None:
    clock = FakeClock()
    cache = KeyCache(TTL_S, clock=clock)
    with sessions() as session:
        row, key = create_key(session, "k", "alice")
    with sessions() as session:
        assert authenticate(session, key, cache) == "alice"
    with sessions() as session:
        revoke_key(session, session.get(ApiKey, row.id))
    clock.now += TTL_S / 2
    queries = count_queries(app)
    with sessions() as session:  # within the TTL: the documented grace, no database read
        assert authenticate(session, key, cache) == "alice"
    assert queries == []
    clock.now += TTL_S / 2
    with sessions() as session:  # the TTL is over: read again, refused
        assert authenticate(session, key, cache) is None
    clock.now += 10 * TTL_S
    with sessions() as session:  # and a refused key is not cached as valid later either
        assert authenticate(session, key, cache) is None


def test_unknown_keys_are_never_cached_and_ttl_zero_caches_nothing(
    sessions: sessionmaker[Session],
) -> None:
    cache = KeyCache(TTL_S)
    with sessions() as session:
        assert authenticate(session, "gb_" + "x" * 43, cache) is None
    assert cache._entries == {}
    off = KeyCache(0.0)
    with sessions() as session:
        row, key = create_key(session, "k", "bob")
        assert authenticate(session, key, off) == "bob"
        assert off._entries == {}
        revoke_key(session, row)
        assert authenticate(session, key, off) is None


def test_a_full_cache_starts_over() -> None:
    cache = KeyCache(TTL_S, max_entries=3)
    for i in range(3):
        cache.remember(f"d{i}", "o")
    cache.remember("d3", "o")
    assert list(cache._entries) == ["d3"]


def test_polls_through_the_app_read_the_key_once_per_ttl(app: FastAPI) -> None:
    clock = FakeClock()
    app.state.key_cache = KeyCache(TTL_S, clock=clock)
    with app.state.sessionmaker() as session:
        row, key = create_key(session, "k", "carol")
    job_id = new_job(app.state.sessionmaker, "carol", status=JobStatus.running.value)
    queries = count_queries(app)
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        for _ in range(3):
            assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
        key_reads = [q for q in queries if "FROM api_keys" in q]
        assert len(key_reads) == 1, queries
        with app.state.sessionmaker() as session:
            revoke_key(session, session.get(ApiKey, row.id))
        assert client.get(f"/v1/jobs/{job_id}", headers=headers).status_code == 200
        clock.now += TTL_S
        resp = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert resp.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_snapshots_read_many_jobs_and_skip_missing_ones(sessions: sessionmaker[Session]) -> None:
    a = new_job(sessions, "o", status=JobStatus.running.value, stage="training_gan", progress=0.5)
    b = new_job(sessions, "o", status=JobStatus.failed.value, error="boom")
    found = snapshots(sessions, [a, b, uuid.uuid4()])
    assert set(found) == {a, b}
    assert (found[a]["status"], found[a]["stage"], found[a]["progress"]) == (
        "running",
        "training_gan",
        0.5,
    )
    assert found[b]["error"] == "boom" and found[b]["eta_seconds"] is None


def test_one_query_per_poll_serves_every_stream(
    app: FastAPI, sessions: sessionmaker[Session]
) -> None:
    jobs = [new_job(sessions, "o", status=JobStatus.running.value) for _ in range(3)]
    watch = JobWatch(sessions, poll_s=0.01)
    queries = count_queries(app)

    async def follow() -> list[dict | None]:
        subscribed = [jobs[i % 3] for i in range(30)]  # 30 streams on 3 jobs
        for job_id in subscribed:
            watch.subscribe(job_id)
        first = await asyncio.gather(*(watch.next(j, {}) for j in subscribed))
        with sessions.begin() as session:
            session.get(Job, jobs[0]).progress = 0.75
            session.delete(session.get(Job, jobs[1]))
        await watch.next(jobs[0], {})  # the poll running at the change may predate it
        after = [await watch.next(j, {}) for j in jobs]
        for job_id in subscribed:
            watch.unsubscribe(job_id)
        await asyncio.sleep(0.05)  # the poller stops once no stream is left
        assert watch._task is not None and watch._task.done()
        return [*first, *after]

    polls_before = len(queries)
    results = asyncio.run(follow())
    first, after = results[:30], results[30:]
    assert all(r is not None and r["status"] == "running" for r in first)
    assert after[0]["progress"] == 0.75
    assert after[1] is None, "a deleted job reads as gone"
    assert after[2]["status"] == "running"
    job_polls = [q for q in queries[polls_before:] if "jobs.id IN" in q]
    # 30 streams, a handful of polls: one query each, not one per stream and poll
    assert 0 < len(job_polls) < 30, len(job_polls)


class StubRequest:
    """What `_stream` asks of the request: whether the client went away."""

    def __init__(self) -> None:
        self.gone = False

    async def is_disconnected(self) -> bool:
        return self.gone


def test_a_stream_follows_its_job_to_the_end_through_the_shared_poller(
    sessions: sessionmaker[Session],
) -> None:
    running = {"status": "running", "stage": "training_gan", "progress": 0.1}
    job_id = new_job(sessions, "o", **running)
    gone_id = new_job(sessions, "o", **running)
    watch = JobWatch(sessions, poll_s=0.01)

    async def follow() -> tuple[list[str], list[str]]:
        first = {**running, "eta_seconds": None, "error": None}
        stream = _stream(StubRequest(), watch, job_id, first)  # type: ignore[arg-type]
        deleted = _stream(StubRequest(), watch, gone_id, first)  # type: ignore[arg-type]
        events = [await anext(stream), await anext(deleted)]
        reading = asyncio.gather(_drain(stream), _drain(deleted))
        await asyncio.sleep(0.05)
        with sessions.begin() as session:
            session.get(Job, job_id).progress = 0.5
        await asyncio.sleep(0.05)
        with sessions.begin() as session:
            job = session.get(Job, job_id)
            job.status, job.error = JobStatus.failed.value, "boom"
            session.delete(session.get(Job, gone_id))
        rest, rest_deleted = await asyncio.wait_for(reading, 10)
        assert watch._streams == {}, "every stream unsubscribed"
        return events + rest, rest_deleted

    events, deleted = asyncio.run(follow())
    assert events[0].startswith("event: progress") and '"progress": 0.1' in events[0]
    assert any('"progress": 0.5' in e for e in events[2:])
    assert events[-1] == 'event: end\ndata: {"status": "failed", "error": "boom"}\n\n'
    assert deleted[-1] == 'event: end\ndata: {"status": "deleted", "error": null}\n\n'


async def _drain(stream: AsyncIterator[str]) -> list[str]:
    return [event async for event in stream]


@pytest.mark.parametrize("workers", [1, 2])
def test_api_workers_start_that_many_uvicorn_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    import uvicorn

    from cli.service_commands import run_api

    calls: list[tuple[object, dict]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    settings = Settings(data_dir=tmp_path, database_url="", broker_url="", api_workers=workers)
    run_api(settings, "127.0.0.1", 8123)
    [(app, options)] = calls
    assert (options["host"], options["port"]) == ("127.0.0.1", 8123)
    if workers == 1:  # this very app, built from these settings
        assert isinstance(app, FastAPI) and app.state.settings is settings
    else:  # each process builds its own from the same environment
        assert app == "app.main:create_app"
        assert options["factory"] is True and options["workers"] == workers


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")
def test_the_api_raises_a_low_open_files_limit() -> None:
    """500 event streams need 500 descriptors; a soft limit of 256 is raised (in a child, so
    this process keeps its own)."""
    code = (
        "import resource; from cli.service_commands import raise_open_files_limit as r; "
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); r(); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    soft, hard = (int(v) for v in done.stdout.split())
    assert soft > 256 and (hard == -1 or soft <= hard)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX priorities")
def test_the_serve_worker_can_run_at_a_lower_priority() -> None:
    from cli.service_commands import _lower_priority

    code = "import os; print(os.nice(0))"
    child = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60,
        start_new_session=True, preexec_fn=lambda: _lower_priority(5),
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert int(child.stdout) == min(19, os.nice(0) + 5)
