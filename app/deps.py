"""Typed dependencies. Everything hangs off app.state so that several apps (tests) can coexist.

FastAPI runs a plain `def` dependency in the thread pool, one hand-off per dependency per
request; under many concurrent requests those hand-offs (and the GIL passing between the event
loop and the pool's threads) cost more than the work. So the dependencies that only read
app.state are `async def`, and the key check needs a thread only when its cache misses.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.auth import (
    API_KEY_HEADER,
    KeyCache,
    api_key_scheme,
    authenticate,
    bearer_scheme,
    request_key,
    unauthorized,
)
from jobs.settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


async def get_sessionmaker(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessionmaker


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SessionDep = Annotated[Session, Depends(get_session)]
# For async routes that open a short session inside one thread-pool call of their own.
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessionmaker)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


async def get_current_owner(
    request: Request,
    # The schemes document the two headers; the headers are read as sent (an empty one too).
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str:
    """The owner of the request's API key (Bearer or X-API-Key); 401 without one. A key this
    process verified less than `api_key_cache_s` ago is taken from its cache (no thread, no
    database read); any other is checked in the thread pool with a session of its own."""
    headers = request.headers
    key = request_key(headers.get("authorization"), headers.get(API_KEY_HEADER))
    state = request.app.state
    owner = state.key_cache.owner_of(key) if key else None
    if key and owner is None:
        owner = await run_in_threadpool(_authenticate, state.sessionmaker, key, state.key_cache)
    if owner is None:
        raise unauthorized(key_sent=bool(key))
    return owner


def _authenticate(sessions: sessionmaker[Session], key: str, cache: KeyCache) -> str | None:
    with sessions() as session:
        return authenticate(session, key, cache)


# Every route that reads or changes jobs takes this: it authenticates and names the owner.
CurrentOwner = Annotated[str, Depends(get_current_owner)]
