"""The store as the API shows it: download responses and the 503 for a store that is down."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from app.problems import TYPE_PREFIX, ProblemError, problem_response
from jobs.settings import Settings
from jobs.storage import ArtifactMissing, StorageUnavailable, storage_for

log = logging.getLogger(__name__)
STORE_RETRY_AFTER_S = 30


def artifact_response(
    settings: Settings,
    job_id: uuid.UUID,
    name: str,
    media_type: str,
    filename: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A file of a succeeded job (the caller checked the owner and the status): the file
    itself, a 307 to a short-lived presigned URL, or the object streamed through the API."""
    try:
        found = storage_for(settings).download(job_id, name, filename)
    except ArtifactMissing as exc:
        raise ProblemError(404, "file-missing", "File missing", str(exc)) from None
    if found.url:
        return RedirectResponse(found.url, status_code=307, headers={"Cache-Control": "no-store"})
    headers = dict(headers or {})
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if found.path:
        return FileResponse(found.path, media_type=media_type, headers=headers)
    headers["Content-Length"] = str(found.size)
    return StreamingResponse(found.chunks, media_type=media_type, headers=headers)


def _on_storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("storage unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request, 503, "Storage unavailable", str(exc), TYPE_PREFIX + "storage-unavailable",
        headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
    )  # fmt: skip


def install_storage_handler(app: FastAPI) -> None:
    app.add_exception_handler(StorageUnavailable, _on_storage_unavailable)
