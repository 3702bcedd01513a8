"""Typed dependencies. Everything hangs off app.state so that several apps (tests) can coexist."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from app.auth import (
    API_KEY_HEADER,
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


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_celery(request: Request) -> Celery:
    return request.app.state.celery


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_current_owner(
    request: Request,
    session: SessionDep,
    # The schemes document the two headers; the headers are read as sent (an empty one too).
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> str:
    """The owner of the request's API key (Bearer or X-API-Key); 401 without one."""
    headers = request.headers
    key = request_key(headers.get("authorization"), headers.get(API_KEY_HEADER))
    owner = authenticate(session, key) if key else None
    if owner is None:
        raise unauthorized(key_sent=bool(key))
    return owner


# Every route that reads or changes jobs takes this: it authenticates and names the owner.
CurrentOwner = Annotated[str, Depends(get_current_owner)]
