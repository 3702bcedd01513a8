"""RFC 9457 problem details: every 4xx/5xx the API sends is application/problem+json."""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# Problem types are tag URIs (RFC 4151): stable identifiers that nobody is meant to fetch.
TYPE_PREFIX = "tag:gan-balancer,2025:problem/"


class Problem(BaseModel):
    """An RFC 9457 problem document. Extension members (e.g. `errors`, `rule`) may follow."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {
                "type": TYPE_PREFIX + "job-not-found",
                "title": "Job not found",
                "status": 404,
                "detail": "no job with id 0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11",
                "instance": "/v1/jobs/0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11",
            }
        },
    )

    type: str = Field("about:blank", description="URI identifying the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str | None = Field(None, description="What went wrong this time, for a person.")
    instance: str | None = Field(None, description="The request path that failed.")
    # Extension members of a refused dataset (RFC 9457 allows extension members).
    rule: str | None = Field(
        None, description="A refused dataset: the check that failed, e.g. `path_traversal`."
    )
    entry: str | None = Field(
        None,
        description="A refused dataset: the zip entry (or class folder) at fault, with "
        "control characters escaped as in Python's repr().",
    )


class ProblemError(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, slug: str, title: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    title: str,
    detail: str | None,
    type_: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {"type": type_, "title": title, "status": status, "detail": detail}
    body |= {"instance": request.url.path, **extensions}
    return JSONResponse(
        jsonable_encoder(body), status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


async def _on_problem(request: Request, exc: ProblemError) -> JSONResponse:
    return problem_response(
        request, exc.status, exc.title, exc.detail, TYPE_PREFIX + exc.slug, **exc.extensions
    )


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Covers 404 for unknown routes and 405: about:blank, whose title is the status phrase.
    phrase = HTTPStatus(exc.status_code).phrase
    detail = None if exc.detail == phrase else str(exc.detail)
    headers = exc.headers
    if exc.status_code == 405:
        fallback = (headers or {}).get("Allow", "")
        headers = {**(headers or {}), "Allow": _allowed_methods(request, fallback)}
    return problem_response(request, exc.status_code, phrase, detail, headers=headers)


def _allowed_methods(request: Request, fallback: str) -> str:
    """Every method the path answers. Starlette's 405 lists the methods of the first route
    that matched the path only (GET /v1/jobs/{id}, not its DELETE: FastAPI makes one route per
    method). Each method is tried against the router (mounts left out: they take any)."""
    allowed = [
        method
        for method in HTTP_METHODS
        if any(
            not isinstance(route, Mount)
            and route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed) or fallback


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
    return problem_response(
        request, 422, "Request validation failed", detail, TYPE_PREFIX + "validation-error",
        errors=errors,
    )  # fmt: skip


# A database that is down, restarting or overloaded is a 503: the client may retry, and the
# API recovers by itself (pool_pre_ping replaces dead connections; see jobs/db.py).
DB_RETRY_AFTER_S = 5


def _database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _unavailable(request: Request, exc: BaseException) -> JSONResponse:
    """503 for a database that is down and a data directory that is full."""
    if _disk_full(exc):
        slug, title = "storage-full", "Storage full"
        detail = "the server's data directory is full; try again later"
    else:
        slug, title = "database-unavailable", "Database unavailable"
        detail = "the database is unreachable or overloaded; try again shortly"
    log.warning("%s on %s %s: %s", slug, request.method, request.url.path, exc)
    return problem_response(
        request, 503, title, detail, TYPE_PREFIX + slug,
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )  # fmt: skip


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Also reached by errors raised in middleware, outside the per-class handlers.
    if _database_unavailable(exc) or _disk_full(exc):
        return _unavailable(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(
        request, 500, "Internal Server Error", "an unexpected error occurred; see the server log"
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(RequestValidationError, _on_validation)
    # Handlers by class answer inside the app; the one for Exception answers from Starlette's
    # outermost middleware, which then re-raises and logs a traceback for a mere 503.
    app.add_exception_handler(SQLAlchemyError, _on_unexpected)
    app.add_exception_handler(OSError, _on_unexpected)
    app.add_exception_handler(Exception, _on_unexpected)
    _document_problems(app)


# One example per status for the OpenAPI document.
_EXAMPLES: dict[int, tuple[str, str, str]] = {
    404: ("job-not-found", "Job not found", "no job with id 0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11"),
    409: ("job-not-finished", "Job has no results", "the job is running; no results yet"),
    413: ("upload-too-large", "Upload too large", "the limit is 2147483648 bytes"),
    422: ("invalid-dataset", "The dataset is not usable", "only 1 class folder; 2 needed"),
    503: ("not-ready", "Not ready", "broker: error: OperationalError: connection refused"),
}  # fmt: skip


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry for a route that can answer these error codes."""
    return {
        c: {
            "model": Problem,
            "description": HTTPStatus(c).phrase,
            "content": {"application/json": {"example": _example(c)}},
        }
        for c in codes
    }


def _example(code: int) -> dict[str, Any]:
    if code in _EXAMPLES:
        slug, title, detail = _EXAMPLES[code]
        return {"type": TYPE_PREFIX + slug, "title": title, "status": code, "detail": detail}
    phrase = HTTPStatus(code).phrase
    return {"type": "about:blank", "title": phrase, "status": code, "detail": None}


def _validation_example() -> dict[str, Any]:
    return {
        "type": TYPE_PREFIX + "validation-error",
        "title": "Request validation failed",
        "status": 422,
        "detail": "query.limit: Input should be greater than or equal to 1",
        "errors": [{"loc": ["query", "limit"], "msg": "...", "type": "greater_than_equal"}],
    }


def _document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say application/problem+json for every error response,
    including FastAPI's automatic 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        ref = {"$ref": "#/components/schemas/Problem"}
        for path in schema.get("paths", {}).values():
            for op in path.values():
                for code, resp in op.get("responses", {}).items():
                    if code[0] in "45" and code.isdigit():
                        old = resp.get("content", {}).get("application/json", {})
                        example = old.get("example") or _validation_example()
                        resp["content"] = {MEDIA_TYPE: {"schema": ref, "example": example}}
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema()
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
