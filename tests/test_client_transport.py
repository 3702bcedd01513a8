"""balancer.Client's transport, without the service: a folder is zipped in bounded pieces,
and downloads follow redirects, sending the API key only to the service's own origin (a
presigned storage URL must not receive it). Two small real HTTP servers play the API's
redirecting download route and the storage host."""

from __future__ import annotations

import http.server
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from balancer import Client, Job, ServiceError
from balancer._zipstream import zip_chunks

KEY = "gb_test-key"


def test_a_folder_is_zipped_in_bounded_pieces(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    blobs = {f"cls{i % 2}/img{i}.bmp": os.urandom(300_000) for i in range(6)}
    blobs["cls0/deep/x.png"] = b"\x89PNG" + os.urandom(1000)
    for name, data in blobs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    chunks = list(zip_chunks(folder, chunk_bytes=64 * 1024))
    # Never the whole zip (1.8 MB) at once: pieces stay near the chunk size.
    assert sum(map(len, chunks)) > 1_800_000
    assert max(map(len, chunks)) < 3 * 64 * 1024
    out = tmp_path / "out.zip"
    out.write_bytes(b"".join(chunks))
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == blobs


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers from `routes`: path -> (status, headers, body); records each request's headers."""

    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
    seen: list[tuple[str, dict[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        status, headers, body = self.routes.get(self.path, (404, {}, b"{}"))
        if headers.pop("needs-key", None) and self.headers.get("authorization") != f"Bearer {KEY}":
            status, headers, body = 401, {}, b'{"status": 401, "title": "Unauthorized"}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def servers() -> Iterator[tuple[str, str, type[_Recorder], type[_Recorder]]]:
    api_handler = type("Api", (_Recorder,), {"routes": {}, "seen": []})
    storage_handler = type("Storage", (_Recorder,), {"routes": {}, "seen": []})
    running = []
    for handler in (api_handler, storage_handler):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        running.append(server)
    urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in running]
    yield urls[0], urls[1], api_handler, storage_handler
    for server in running:
        server.shutdown()
        server.server_close()


def test_downloads_follow_redirects_and_keep_the_key_home(servers, tmp_path: Path) -> None:  # noqa: ANN001
    api, storage, api_handler, storage_handler = servers
    job_route = "/v1/jobs/j1"
    presigned = "/bucket/balanced.zip?X-Amz-Signature=abc"
    api_handler.routes = {
        f"{job_route}/balanced-dataset": (307, {"location": storage + presigned}, b""),
        f"{job_route}/report.html": (307, {"location": "/files/report.html"}, b""),
        "/files/report.html": (200, {"needs-key": "1"}, b"<!doctype html><p>report"),
        f"{job_route}/samples.png": (307, {"location": storage + "/gone.png"}, b""),
    }
    storage_handler.routes = {presigned: (200, {}, b"PK zip bytes")}
    with Client(api, KEY) as client:
        job = Job(client, {"id": "j1", "status": "succeeded"})
        assert job.download_balanced(tmp_path / "b.zip").read_bytes() == b"PK zip bytes"
        # A redirect within the service's origin keeps the key.
        assert job.download_report_html(tmp_path / "r.html").read_bytes().endswith(b"report")
        with pytest.raises(ServiceError) as missing:
            job.download_samples(tmp_path / "s.png")
    assert missing.value.status == 404
    assert not (tmp_path / "s.png").exists() and not list(tmp_path.glob("*.part"))
    assert [p for p, _ in storage_handler.seen] == [presigned, "/gone.png"]
    assert all("authorization" not in h for _, h in storage_handler.seen)
    assert all(h.get("authorization") == f"Bearer {KEY}" for _, h in api_handler.seen)
