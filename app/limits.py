"""Refuse an oversized upload from its Content-Length, before any of it is read.
(Uploads without a Content-Length are counted while saving; see app.storage.save_upload.)"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.problems import problem_response


class BodySizeLimit:
    def __init__(self, app: ASGIApp, path: str, limit: int) -> None:
        self.app, self.path, self.limit = app, path, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.limit:
                response = problem_response(
                    Request(scope),
                    413,
                    "Upload too large",
                    f"the request has {int(length)} bytes; the limit is {self.limit} bytes",
                    type_="tag:gan-balancer,2025:problem/upload-too-large",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
