"""API keys: creation, lookup and revocation, the OpenAPI security schemes, and a gate that
refuses an upload before its body is read.

A key is `gb_` + `secrets.token_urlsafe(32)` (256 random bits). Only its SHA-256 is stored:
with that much entropy nobody can guess a preimage, so a slow password hash (bcrypt, argon2)
would add latency to every request and no safety. A request's key is hashed, the row is looked
up by that hash, and the hashes are compared again with `hmac.compare_digest`.

Each API process keeps the keys it verified for `Settings.api_key_cache_s` seconds (`KeyCache`),
so a status poll does not read the key's row every time: a revoked key is still accepted by a
process that verified it within that many seconds, and refused after (0 = read the row on every
request: a revocation takes effect at once). Unknown and revoked keys are never cached.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus

from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.problems import TYPE_PREFIX, ProblemError, problem_response
from jobs import crud
from jobs.models import ApiKey, utcnow
from jobs.settings import Settings

log = logging.getLogger(__name__)
KEY_PREFIX = "gb_"
LISTED_PREFIX_LEN = 8
MAX_KEY_LEN = 256
# last_used_at is written at most this often per key: a status poll every second must not
# become a database write every second.
LAST_USED_RESOLUTION = timedelta(minutes=1)
API_KEY_HEADER = "X-API-Key"
# The multipart envelope around the file (boundaries, the config field), as in app.main.
ENVELOPE_SLACK = 1024**2
KEY_HINT = f"send `Authorization: Bearer <key>` or `{API_KEY_HEADER}: <key>`"

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="BearerKey",
    description="An API key as a bearer token: `Authorization: Bearer gb_...`. "
    "Create one with `balancer keys create --name NAME`.",
)
api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    scheme_name="ApiKeyHeader",
    description=f"The same API key in the `{API_KEY_HEADER}` header.",
)


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, name: str, owner: str) -> tuple[ApiKey, str]:
    """A new key for `owner`; returns the row and the key, which is never stored."""
    key = generate_key()
    row = ApiKey(name=name, owner=owner, key_hash=hash_key(key), prefix=key[:LISTED_PREFIX_LEN])
    session.add(row)
    session.commit()
    return row, key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def count_keys(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ApiKey)) or 0


def find_keys(session: Session, ref: str) -> list[ApiKey]:
    """Keys matching an id, a listed prefix, or the whole key."""
    ref = ref.strip()
    conditions = [ApiKey.prefix == ref, ApiKey.key_hash == hash_key(ref)]
    with contextlib.suppress(ValueError):
        conditions.append(ApiKey.id == uuid.UUID(ref))
    return list(session.scalars(select(ApiKey).where(or_(*conditions))))


def revoke_key(session: Session, key: ApiKey) -> bool:
    """Revoke the key; False if it already was."""
    stmt = update(ApiKey).where(ApiKey.id == key.id, ApiKey.revoked_at.is_(None))
    done = session.execute(stmt.values(revoked_at=utcnow())).rowcount == 1
    session.commit()
    session.refresh(key)
    return done


@dataclass(frozen=True)
class _Verified:
    owner: str
    expires: float  # KeyCache's clock


class KeyCache:
    """Keys this process verified recently: digest -> owner, each for `ttl_s` seconds from
    its check against the database. Only valid keys go in, so random keys cannot fill it;
    past `max_entries` it is emptied (the keys are simply checked again)."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self._clock = ttl_s, max_entries, clock
        self._entries: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    def owner(self, digest: str) -> str | None:
        """The cached owner of a key verified less than ttl_s ago; None to check it."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            with self._lock:
                if self._entries.get(digest) is entry:
                    del self._entries[digest]
            return None
        return entry.owner

    def owner_of(self, key: str) -> str | None:
        """`owner` by the key itself; None for a key too long to be one."""
        return self.owner(hash_key(key)) if len(key) <= MAX_KEY_LEN else None

    def remember(self, digest: str, owner: str) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[digest] = _Verified(owner, self._clock() + self.ttl_s)


def authenticate(session: Session, key: str, cache: KeyCache | None = None) -> str | None:
    """The owner of a valid, unrevoked key; None otherwise. With `cache`, a key verified less
    than cache.ttl_s ago is taken without a database read (nor a last_used_at update: the
    next check after the TTL does that, and the TTL is far below LAST_USED_RESOLUTION)."""
    if not key or len(key) > MAX_KEY_LEN:
        return None
    digest = hash_key(key)
    if cache is not None and (owner := cache.owner(digest)) is not None:
        return owner
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
        return None
    owner = row.owner
    _touch(session, row)
    if cache is not None:
        cache.remember(digest, owner)
    return owner


def _touch(session: Session, row: ApiKey) -> None:
    now = utcnow()
    if row.last_used_at and now - row.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
    try:
        session.execute(update(ApiKey).where(ApiKey.id == row.id, stale).values(last_used_at=now))
        session.commit()
    except SQLAlchemyError as exc:  # advisory only: never fail a request over it
        session.rollback()
        log.warning("could not record the use of key %s: %r", row.prefix, exc)


def unauthorized(key_sent: bool) -> HTTPException:
    """401 with a WWW-Authenticate challenge. Unknown and revoked keys read the same."""
    if not key_sent:
        return HTTPException(401, f"no API key: {KEY_HINT}", {"WWW-Authenticate": "Bearer"})
    challenge = 'Bearer error="invalid_token"'
    detail = "the API key is not valid (unknown or revoked)"
    return HTTPException(401, detail, {"WWW-Authenticate": challenge})


def check_active_jobs(session: Session, settings: Settings, owner: str, adding: int = 1) -> None:
    """429 with Retry-After if `adding` more jobs would take the owner over their limit of
    queued + running jobs (adding=0: the new job is in the table already)."""
    limit = settings.max_active_jobs_for(owner)
    active = crud.count_active_jobs(session, owner)
    if active + adding > limit:
        active = min(active, limit)
        detail = (
            f"{active} of your jobs are queued or running and the limit is {limit}; "
            "wait for one to end, or cancel one"
        )
        retry = {"Retry-After": str(settings.owner_retry_after_s)}
        raise HTTPException(429, detail, retry)


def upload_too_large(limit: int, size: int | None = None) -> ProblemError:
    sent = f"the upload has {size} bytes; " if size is not None else ""
    detail = f"{sent}your upload limit is {limit} bytes"
    return ProblemError(413, "upload-too-large", "Upload too large", detail, limit=limit)


class UploadGate:
    """Check the key, the owner's active-job limit (for a job) and the declared size of an
    upload before its body is read: FastAPI reads a form body before it resolves dependencies,
    so without this an anonymous client could make the server spool a whole upload to disk.
    The route checks all of it again (and the size of uploads sent without a Content-Length);
    this only answers earlier. If the database fails here, the request goes on to the route, whose
    error handling answers it."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], job_paths: tuple[str, ...]) -> None:
        self.app, self.paths, self.job_paths = app, paths, job_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            request = Request(scope)
            try:
                refusal = await run_in_threadpool(self._refusal, request)
            except SQLAlchemyError:
                refusal = None  # the route meets the same error and answers it as usual
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        state = request.app.state
        try:
            key = request_key(
                request.headers.get("authorization"), request.headers.get(API_KEY_HEADER)
            )
            with state.sessionmaker() as session:
                owner = authenticate(session, key, state.key_cache) if key else None
                if owner is None:
                    raise unauthorized(bool(key))
                if request.url.path in self.job_paths:  # a dataset upload starts no job
                    check_active_jobs(session, state.settings, owner)
            length = request.headers.get("content-length", "")
            limit = state.settings.max_upload_bytes_for(owner)
            if length.isdigit() and int(length) > limit + ENVELOPE_SLACK:
                raise upload_too_large(limit, int(length))
        except (HTTPException, ProblemError) as exc:
            return _problem(request, exc)
        return None


def request_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key from `Authorization: Bearer <key>` or X-API-Key. Two different keys are a 401:
    which of them the client meant would be a guess (found by fuzzing: a bad X-API-Key next
    to a good bearer key was accepted)."""
    scheme, _, credentials = (authorization or "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    challenge = {"WWW-Authenticate": 'Bearer error="invalid_request"'}
    if api_key is not None and not api_key.strip():
        raise HTTPException(401, "the X-API-Key header is empty", challenge)
    if bearer and api_key and api_key != bearer:
        detail = "two different API keys (Authorization and X-API-Key): send one"
        raise HTTPException(401, detail, challenge)
    return bearer or api_key or None


def _problem(request: Request, exc: HTTPException | ProblemError) -> Response:
    if isinstance(exc, ProblemError):
        return problem_response(
            request, exc.status, exc.title, exc.detail, TYPE_PREFIX + exc.slug, **exc.extensions
        )
    title = HTTPStatus(exc.status_code).phrase
    return problem_response(request, exc.status_code, title, exc.detail, headers=exc.headers)
