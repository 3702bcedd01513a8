"""Hostile and broken uploads against the real app, as jobs (POST /v1/jobs) and as datasets
(POST /v1/datasets): each is refused with a 4xx application/problem+json naming the rule and
the entry, leaves no job or dataset row, no job folder and no file anywhere, and never causes
a 500.

Most run in-process (Starlette's TestClient; the upload checks need no worker). The streaming
413 and the worker's image checks run through a real uvicorn server and Celery worker.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from app.main import create_app
from app.problems import TYPE_PREFIX
from jobs.models import Base
from jobs.settings import Settings
from tests.hardening.conftest import LIMIT_ENV, LIMITS, UPLOAD_LIMIT, key_headers, snapshot
from tests.hardening.hostile import (
    Case,
    make_zip,
    png,
    png_header_bomb,
    upload_cases,
    valid_entries,
    with_dataset,
)

with warnings.catch_warnings():  # Starlette would rather have httpx2 behind its TestClient
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

PROBLEM = "application/problem+json"
INVALID = TYPE_PREFIX + "invalid-dataset"
TOO_LARGE = TYPE_PREFIX + "upload-too-large"
BODY_LIMIT = UPLOAD_LIMIT + 1024**2  # app.main's slack for the multipart envelope
CASES = upload_cases()


class Api:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "data"
        sentinel = root / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep.txt").write_text("must not change")
        (root / "tmp").mkdir()
        settings = Settings(
            data_dir=self.data_dir,
            database_url="",
            broker_url="",
            max_upload_bytes=UPLOAD_LIMIT,
            zip_max_entries=LIMITS.max_entries,
            zip_max_total_bytes=LIMITS.max_total_bytes,
            zip_max_entry_bytes=LIMITS.max_entry_bytes,
            zip_max_ratio=LIMITS.max_ratio,
            zip_ratio_min_bytes=LIMITS.ratio_min_bytes,
            zip_max_name_length=LIMITS.max_name_length,
            image_max_pixels=LIMITS.max_image_pixels,
        )
        self.app = create_app(settings)
        Base.metadata.create_all(self.app.state.engine)
        self.headers = key_headers(self.app.state.sessionmaker)
        self.client = TestClient(self.app, headers=self.headers, raise_server_exceptions=False)

    def post(self, data: bytes, path: str = "/v1/jobs", **kw: object) -> object:
        files = {"dataset": ("upload.zip", data, "application/zip")}
        form = {"config": "{}"} if path == "/v1/jobs" else {}
        return self.client.post(path, files=files, data=form, **kw)

    def job_rows(self) -> int:
        return self.rows("jobs") + self.rows("datasets")

    def rows(self, table: str) -> int:
        with self.app.state.engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        # Spooled uploads roll over into root/tmp, where the tests can see what is left.
        mp.setattr("tempfile.tempdir", str(root / "tmp"))
        api = Api(root)
        api.post(b"warm-up: not a zip")  # opens the database pool
        yield api
        api.client.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_untouched(api: Api, before: dict, fds: int) -> None:
    assert snapshot(api.root) == before, "a refused upload changed the file system"
    assert not list((api.data_dir / "jobs").iterdir()), "a job folder was left behind"
    assert not list((api.data_dir / "datasets").iterdir()), "a dataset file was left behind"
    assert not list((api.root / "tmp").iterdir()), "a temporary file was left behind"
    assert api.job_rows() == 0
    assert open_fds() <= fds, "a temporary file was left open"


def assert_problem(resp: object, status: int, type_: str, path: str = "/v1/jobs") -> dict:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body = resp.json()
    assert body["type"] == type_ and body["status"] == status
    assert body["title"] and body["detail"] and body["instance"] == path
    return body


def assert_refused(resp: object, case: Case, path: str = "/v1/jobs") -> None:
    body = assert_problem(resp, 422, INVALID, path)
    assert body["title"] == "The dataset is not usable"
    assert body["rule"] == case.rule, body
    assert body["entry"] == case.entry, body
    assert f"[rule: {case.rule}]" in body["detail"]
    if case.entry is not None:
        assert f"entry '{case.entry}'" in body["detail"]


def test_there_are_enough_hostile_inputs() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_upload_is_refused(api: Api, case: Case) -> None:
    before, fds = snapshot(api.root), open_fds()
    assert_refused(api.post(case.data), case)
    assert_untouched(api, before, fds)
    assert not list(api.root.rglob("evil*")), "a zip-slip name reached the file system"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_dataset_upload_is_refused(api: Api, case: Case) -> None:
    """The same door checks for a dataset uploaded on its own."""
    before, fds = snapshot(api.root), open_fds()
    assert_refused(api.post(case.data, "/v1/datasets"), case, "/v1/datasets")
    assert_untouched(api, before, fds)
    assert not list(api.root.rglob("evil*")), "a zip-slip name reached the file system"


def test_declared_length_over_the_limit_is_413_for_a_dataset(api: Api) -> None:
    before, fds = snapshot(api.root), open_fds()
    resp = api.post(b"\0" * (BODY_LIMIT + 1), "/v1/datasets")
    assert_problem(resp, 413, TOO_LARGE, "/v1/datasets")
    assert_untouched(api, before, fds)


def test_unexpected_error_is_a_422_not_a_500(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(*_: object) -> None:
        raise IndexError("zipfile went somewhere it should not")

    monkeypatch.setattr("pipeline.layout.scan_entries", explode)
    before, fds = snapshot(api.root), open_fds()
    case = Case("surprise", make_zip(valid_entries()), "unreadable_archive", None)
    assert_refused(api.post(case.data), case)
    assert_untouched(api, before, fds)
    assert "unexpected error checking the upload" in caplog.text
    assert "IndexError" in caplog.text


def test_declared_length_over_the_limit_is_413(api: Api) -> None:
    before, fds = snapshot(api.root), open_fds()
    body = assert_problem(api.post(b"\0" * (BODY_LIMIT + 1)), 413, TOO_LARGE)
    assert str(UPLOAD_LIMIT) in body["detail"] or str(BODY_LIMIT) in body["detail"]
    assert_untouched(api, before, fds)


def test_streamed_body_is_cut_off_at_the_limit(api: Api) -> None:
    """No Content-Length and a body that never ends: the app reads just past the limit and
    answers 413 (driven at the ASGI level, counting what the app pulls from receive())."""
    chunk = 64 * 1024
    pulled = 0
    messages: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            head = (
                b'--b\r\nContent-Disposition: form-data; name="dataset"; filename="d.zip"\r\n\r\n'
            )
            return {"type": "http.request", "body": head, "more_body": True}
        return {"type": "http.request", "body": b"\0" * chunk, "more_body": True}

    async def send(message: dict) -> None:
        messages.append(message)

    headers = [(b"content-type", b"multipart/form-data; boundary=b")]
    headers += [(k.lower().encode(), v.encode()) for k, v in api.headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/jobs", "raw_path": b"/v1/jobs", "root_path": "",
        "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip
    before, fds = snapshot(api.root), open_fds()
    anyio.run(api.app, scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"content-type", PROBLEM.encode()) in start["headers"]
    body = json.loads(b"".join(m.get("body", b"") for m in messages[1:]))
    assert body["type"] == TOO_LARGE and body["status"] == 413
    assert pulled * chunk <= BODY_LIMIT + 2 * chunk, f"read {pulled} chunks past the limit"
    assert_untouched(api, before, fds)


def test_a_valid_upload_is_still_accepted(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.routes.jobs.enqueue_job", lambda *_: None)
    resp = api.post(make_zip(valid_entries()))
    assert resp.status_code == 202, resp.text
    assert (api.rows("jobs"), api.rows("datasets")) == (1, 1)
    dataset_id = resp.json()["dataset_id"]
    assert [p.name for p in (api.data_dir / "datasets").iterdir()] == [f"{dataset_id}.zip"]
    assert not (api.data_dir / "jobs" / resp.json()["id"]).exists()
    with api.app.state.engine.begin() as conn:  # leave the module's state as it was
        conn.execute(text("DELETE FROM jobs"))
        conn.execute(text("DELETE FROM datasets"))
    (api.data_dir / "datasets" / f"{dataset_id}.zip").unlink()


# --- a real server: the 413 over a socket, and the worker's image checks -------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, dict]]:
    from jobs.db import make_engine, make_sessionmaker
    from tests.service.conftest import running_service

    data_dir = tmp_path_factory.mktemp("hostile-live")
    env = {
        "BALANCER_DATA_DIR": str(data_dir),
        "BALANCER_DATABASE_URL": "",
        "BALANCER_BROKER_URL": "",
        "BALANCER_QUEUE": "gpu",
        "BALANCER_PROGRESS_INTERVAL_S": "0.2",
        **LIMIT_ENV,
    }
    with running_service("embedded", env, data_dir) as svc:
        if getattr(svc, "key", None):  # the service fixture made a key with `balancer keys`
            yield svc, {"Authorization": f"Bearer {svc.key}"}
            return
        engine = make_engine(f"sqlite:///{data_dir / 'balancer.db'}")
        yield svc, key_headers(make_sessionmaker(engine))
        engine.dispose()


def _port(svc: object) -> int:
    return int(str(svc.client.base_url).rsplit(":", 1)[1].strip("/"))


def _raw_post(port: int, head: dict[str, str], chunks: Iterator[bytes]) -> tuple[int, dict]:
    """POST over a plain socket, writing the body from another thread while this one waits
    for the answer: the answer may come long before the body is done."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = ["POST /v1/jobs HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in head.items())]

    def write() -> None:
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server hung up after answering: expected

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        return _read_response(sock)
    finally:
        sock.close()
        writer.join(10)


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or pytest.fail(f"connection closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    headers = dict(
        line.decode().lower().split(": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line
    )
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536) or b""
    assert headers["content-type"].startswith(PROBLEM)
    return status, json.loads(body)


MULTIPART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="dataset"; filename="d.zip"\r\n'
    b"Content-Type: application/zip\r\n\r\n"
)


@pytest.mark.slow
def test_live_declared_length_over_the_limit_is_413_before_the_body(live) -> None:
    svc, headers = live
    before = snapshot(svc.data_dir)
    head = {**headers, "Content-Type": "multipart/form-data; boundary=b"}
    head["Content-Length"] = str(BODY_LIMIT + 1)
    status, body = _raw_post(_port(svc), head, iter(()))  # not one byte of the body is sent
    assert status == 413 and body["type"] == TOO_LARGE and body["status"] == 413
    assert snapshot(svc.data_dir).keys() == before.keys()


@pytest.mark.slow
def test_live_chunked_upload_without_length_is_cut_off(live) -> None:
    """Transfer-Encoding: chunked and a body that never ends: 413 once past the limit."""
    svc, headers = live
    before = snapshot(svc.data_dir)
    head = {**headers, "Content-Type": "multipart/form-data; boundary=b"}
    head["Transfer-Encoding"] = "chunked"
    piece = 256 * 1024
    sent = [0]

    def chunks() -> Iterator[bytes]:
        yield f"{len(MULTIPART_HEAD):x}\r\n".encode() + MULTIPART_HEAD + b"\r\n"
        while sent[0] < 8 * BODY_LIMIT:  # a bound, so a broken server cannot hang the test
            sent[0] += piece
            yield f"{piece:x}\r\n".encode() + b"\0" * piece + b"\r\n"

    status, body = _raw_post(_port(svc), head, chunks())
    assert status == 413 and body["type"] == TOO_LARGE, body
    assert str(BODY_LIMIT) in body["detail"]
    assert snapshot(svc.data_dir).keys() == before.keys()
    assert svc.client.get("/healthz").status_code == 200  # and it keeps serving


@pytest.mark.slow
def test_live_hostile_zip_is_refused_over_http(live) -> None:
    svc, headers = live
    before = snapshot(svc.data_dir)
    files = {"dataset": ("d.zip", with_dataset(("../../evil.png", png())), "application/zip")}
    resp = svc.client.post("/v1/jobs", files=files, headers=headers)
    assert_problem(resp, 422, INVALID)
    assert resp.json()["rule"] == "path_traversal" and resp.json()["entry"] == "../../evil.png"
    assert snapshot(svc.data_dir).keys() == before.keys()


@pytest.mark.slow
def test_live_image_bomb_is_refused_at_upload(live) -> None:
    """A PNG whose header declares 60000x60000 pixels in ~100 bytes: refused from its header
    before the 202, nothing written, the pixels never allocated."""
    svc, headers = live
    before = snapshot(svc.data_dir)
    bomb = png_header_bomb(60_000, 60_000)
    files = {"dataset": ("d.zip", with_dataset(("a/bomb.png", bomb)), "application/zip")}
    resp = svc.client.post("/v1/jobs", files=files, headers=headers, data={"config": "{}"})
    assert_problem(resp, 422, INVALID)
    assert (resp.json()["rule"], resp.json()["entry"]) == ("decompression_bomb", "a/bomb.png")
    assert snapshot(svc.data_dir).keys() == before.keys()


@pytest.mark.slow
def test_live_truncated_image_fails_the_job_naming_entry_and_rule(live) -> None:
    """A PNG cut short after an intact header passes the upload's header check; the worker's
    full decode fails it, and the job ends `failed` naming the entry and the rule."""
    svc, headers = live
    truncated = png(seed=7, size=(64, 64))[:300]
    files = {"dataset": ("d.zip", with_dataset(("a/cut.png", truncated)), "application/zip")}
    resp = svc.client.post("/v1/jobs", files=files, headers=headers, data={"config": "{}"})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 120
    while (job := svc.client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, f"job stuck: {job}\n{svc.log_tail()}"
        time.sleep(0.3)
    assert job["status"] == "failed", job
    assert "a/cut.png" in job["error"] and "[rule: truncated_image]" in job["error"], job
