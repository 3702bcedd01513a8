"""Refuse an oversized upload with 413 while it streams in, before the whole body is read.

A declared Content-Length over the limit is refused before any of the body is read. Without
one (chunked transfer encoding), or whatever the header says, the bytes that arrive through
`receive()` are counted, and once they pass the limit the request ends with a 413: the app,
still parsing the multipart body, is stopped by an exception from `receive()` and whatever it
would have answered is replaced by the 413. Starlette closes the spooled temporary files of
a form it could not finish; no route has run, so there is no job row and no job folder.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import TYPE_PREFIX, problem_response


class BodyTooLarge(HTTPException):
    """Raised from `receive()`: FastAPI lets an HTTPException from body parsing through."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes")


class BodySizeLimit:
    def __init__(self, app: ASGIApp, paths: tuple[str, ...], limit: int) -> None:
        self.app, self.paths, self.limit = app, paths, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths
        ):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            detail = f"the request has {int(length)} bytes; the limit is {self.limit} bytes"
            await refuse(scope, send, self.limit, detail)
            return
        await _CountedRequest(self, scope, receive, send).run()


async def refuse(scope: Scope, send: Send, limit: int, detail: str) -> None:
    """Answer 413 problem+json without reading (more of) the body."""
    response = problem_response(
        Request(scope),
        413,
        "Upload too large",
        detail,
        type_=TYPE_PREFIX + "upload-too-large",
        headers={"Connection": "close"},
        limit=limit,
    )

    async def no_body() -> Message:  # the rest of the body is never read
        return {"type": "http.disconnect"}

    await response(scope, no_body, send)


class _CountedRequest:
    """One request through the app with its body bytes counted."""

    def __init__(self, gate: BodySizeLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.gate, self.scope, self._receive, self._send = gate, scope, receive, send
        self.received = 0
        self.over = False
        self.started = False

    async def run(self) -> None:
        try:
            await self.gate.app(self.scope, self.receive, self.send)
        except Exception:
            if not self.over or self.started:
                raise
        if self.over and not self.started:
            detail = (
                f"the request body passed the limit of {self.gate.limit} bytes while uploading "
                f"({self.received} bytes received)"
            )
            await refuse(self.scope, self._send, self.gate.limit, detail)

    async def receive(self) -> Message:
        if self.over:
            raise BodyTooLarge(self.gate.limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.gate.limit:
                self.over = True
                raise BodyTooLarge(self.gate.limit)
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            return  # the app's own answer to the aborted body; the 413 replaces it
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)
