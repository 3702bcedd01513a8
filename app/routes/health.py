"""Liveness and readiness probes."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from sqlalchemy import text

from app.deps import CeleryDep, SessionDep, SettingsDep
from app.problems import ProblemError, problem_responses
from app.schemas import Health
from jobs.storage import storage_for

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive", response_model=Health)
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    summary="The database, the broker and the file store are reachable",
    response_model=Health,
    responses=problem_responses(503),
)
def readyz(session: SessionDep, celery: CeleryDep, settings: SettingsDep) -> Health:
    checks = {"database": _check(lambda: session.execute(text("SELECT 1")))}
    checks["broker"] = _check(lambda: _ping_broker(celery, settings.queue))
    checks["storage"] = _check(storage_for(settings).check)
    if any(v != "ok" for v in checks.values()):
        raise ProblemError(503, "not-ready", "Not ready", _summary(checks), checks=checks)
    return Health(status="ok", checks=checks)


def _ping_broker(celery: CeleryDep, queue: str) -> None:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        # Declaring the work queue is a real round trip on every transport (and harmless:
        # the worker declares it too); merely opening a connection is not, for SQLAlchemy.
        conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)


def _check(probe) -> str:  # noqa: ANN001
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; say which
        log.warning("readiness check failed: %r", exc)
        return f"error: {type(exc).__name__}: {exc}"
    return "ok"


def _summary(checks: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
