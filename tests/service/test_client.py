"""balancer.Client against the real service (API + worker, both backends): submit a zip and a
folder, wait on the event stream and, when the stream breaks, by polling; report, classes,
downloads, cancel; refusals as ServiceError with rule and entry."""

from __future__ import annotations

import http.server
import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from balancer import Client, ServiceError, ServiceUnreachable

from .conftest import LONG, QUICK, Service
from .datasets import CLASS_SIZES, make_corrupt_image_zip, make_zip

pytestmark = pytest.mark.slow

METHODS = {"baseline", "oversample", "gan"}


@pytest.fixture
def client(service: Service) -> Iterator[Client]:
    with Client(service.base_url, service.key) as c:
        yield c


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_zip(tmp_path_factory.mktemp("client") / "data.zip")


def route_count(service: Service, route: str, method: str = "GET") -> float:
    """How many requests the API answered on `route` (from its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(service.base_url + "/metrics", timeout=30).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "balancer_http_requests_total" and s.labels["route"] == route:
                total += s.value if s.labels["method"] == method else 0
    return total


def test_submit_zip_wait_on_events_and_fetch_everything(
    service: Service, client: Client, dataset_path: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    polls_before = route_count(service, "/v1/jobs/{job_id}")
    streams_before = route_count(service, "/v1/jobs/{job_id}/events")
    job = client.submit(dataset_path, **QUICK)
    assert job.status == "queued" and len(job.id) == 36

    assert job.wait(progress=True, timeout=300) is job
    assert job.status == "succeeded", job.error
    bar = capsys.readouterr().err
    assert "100%" in bar and "succeeded" in bar
    # Followed on the event stream: one stream, and only the final status read.
    assert route_count(service, "/v1/jobs/{job_id}/events") == streams_before + 1
    assert route_count(service, "/v1/jobs/{job_id}") == polls_before + 1

    report = job.report()
    assert set(report["methods"]) == METHODS
    assert [c["name"] for c in report["classes"]] == sorted(CLASS_SIZES)
    rows = job.classes()
    assert {(r["class_name"], r["method"]) for r in rows} == {
        (c, m) for c in CLASS_SIZES for m in METHODS
    }
    balanced = job.download_balanced(tmp_path / "balanced.zip")
    with zipfile.ZipFile(balanced) as zf:
        assert "manifest.csv" in zf.namelist()
        assert zf.testzip() is None
    html = job.download_report_html(tmp_path / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert job.download_samples(tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.part"))

    # A finished job: cancel deletes it, and then it is gone.
    job.cancel()
    with pytest.raises(ServiceError) as gone:
        job.refresh()
    assert gone.value.status == 404 and gone.value.title == "Job not found"


def test_submit_a_folder_zipped_while_uploading(
    service: Service, client: Client, dataset_path: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "my dataset"
    with zipfile.ZipFile(dataset_path) as zf:
        zf.extractall(folder)
    job = client.submit(folder, **LONG)
    try:
        # Accepted: the upload checks read the streamed zip and found the three classes.
        assert job.status == "queued"
        stored = service.data_dir / "datasets" / f"{job.dataset_id}.zip"
        with zipfile.ZipFile(stored) as zf:
            names = sorted(n for n in zf.namelist() if not n.endswith("/"))
        with zipfile.ZipFile(dataset_path) as zf:
            assert names == sorted(zf.namelist())
    finally:
        job.cancel()
    assert job.wait(progress=False, timeout=60).status == "canceled"


@pytest.mark.slow
def test_upload_a_dataset_once_and_submit_by_id(client: Client, dataset_path: Path) -> None:
    dataset = client.upload_dataset(dataset_path)
    assert dataset.classes == sorted(CLASS_SIZES) and not dataset.builtin
    assert sum(c["train"] + c["test"] for c in dataset.counts.values()) == sum(CLASS_SIZES.values())
    assert dataset.id in [d.id for d in client.datasets()]
    assert client.datasets()[0].id == "demo-mnist-1-2-3"
    first = client.submit(dataset_id=dataset.id, **LONG)
    second = dataset.submit(**{**LONG, "seed": 5})
    assert first.dataset_id == second.dataset_id == dataset.id
    assert second.info["config"]["seed"] == 5
    with pytest.raises(ServiceError) as in_use:
        dataset.delete()
    assert in_use.value.status == 409 and first.id in in_use.value.body["jobs"]
    for job in (first, second):
        job.cancel()
        assert job.wait(progress=False, timeout=60).status == "canceled"
    dataset.delete()
    with pytest.raises(ServiceError) as gone:
        client.dataset(dataset.id)
    assert gone.value.status == 404
    with pytest.raises(ValueError, match="either"):
        client.submit(dataset_path, dataset_id=dataset.id)


def test_cancel_a_running_job(client: Client, dataset_path: Path) -> None:
    job = client.submit(dataset_path, **LONG)
    deadline = time.monotonic() + 120
    while job.refresh().status == "queued" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.status == "running"
    assert job.cancel().info["cancel_requested"] is True
    assert job.wait(progress=False, timeout=60).status == "canceled"


def test_wait_falls_back_to_polling_when_the_stream_breaks(
    service: Service, tmp_path: Path
) -> None:
    """Behind a proxy that cuts every event stream after its first event, wait() still sees
    the job end (this one fails fast: a corrupt image)."""
    with _StreamCuttingProxy(service.base_url) as proxy, Client(proxy.url, service.key) as c:
        job = c.submit(make_corrupt_image_zip(tmp_path / "bad.zip"), **QUICK)
        assert job.wait(progress=False, poll_interval=0.2, timeout=120).status == "failed"
        assert "broken.png" in job.error
    assert proxy.cut_streams == 1
    assert proxy.polls >= 1


def test_refused_upload_raises_service_error_with_rule_and_entry(client: Client) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls in ("a", "b"):
            for i in range(3):
                zf.writestr(f"{cls}/{i}.png", make_zip_png())
        zf.writestr("../../evil.png", make_zip_png())
    with pytest.raises(ServiceError) as refused:
        client.submit(buf.getvalue())
    err = refused.value
    assert (err.status, err.rule, err.entry) == (422, "path_traversal", "../../evil.png")
    assert err.title and err.detail and "evil.png" in str(err)
    assert err.type.endswith("/invalid-dataset")


def test_bad_key_and_bad_config_are_service_errors(service: Service, dataset_path: Path) -> None:
    with Client(service.base_url, "gb_not-a-key") as c, pytest.raises(ServiceError) as denied:
        c.submit(dataset_path)
    assert denied.value.status == 401
    with Client(service.base_url, service.key) as c, pytest.raises(ServiceError) as bad:
        c.submit(dataset_path, epochs="many")
    assert bad.value.status == 422 and bad.value.rule is None


def test_unreachable_service(tmp_path: Path) -> None:
    with Client(f"http://127.0.0.1:{_closed_port()}", "gb_x") as c:
        with pytest.raises(ServiceUnreachable, match="cannot reach"):
            c.submit(make_zip(tmp_path / "d.zip"))
        with pytest.raises(ServiceUnreachable):
            c.job("0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11")


def make_zip_png() -> bytes:
    import numpy as np

    from .datasets import png

    return png("circle", np.random.default_rng(0))


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _StreamCuttingProxy:
    """A real HTTP proxy in front of the API that passes every request through, except that
    it ends each event stream after the first event (as a misbehaving proxy might)."""

    def __init__(self, upstream: str) -> None:
        self.upstream, self.cut_streams, self.polls = upstream, 0, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                if self.path.endswith("/events"):
                    proxy.cut_streams += 1
                    return self._cut_stream()
                if self.path.startswith("/v1/jobs/"):
                    proxy.polls += 1
                self._forward()

            def do_POST(self) -> None:  # noqa: N802
                self._forward()

            def do_DELETE(self) -> None:  # noqa: N802
                self._forward()

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self._read_body(length)
                headers = {k: v for k, v in self.headers.items() if k.lower() in _PASSED}
                answer = httpx.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body,
                    timeout=60,
                )  # fmt: skip
                self.send_response(answer.status_code)
                for name in ("content-type", "location"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def _read_body(self, length: int) -> bytes:
                if self.headers.get("transfer-encoding", "").lower() != "chunked":
                    return self.rfile.read(length)
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)

            def _cut_stream(self) -> None:
                headers = {"authorization": self.headers["authorization"]}
                with httpx.stream(
                    "GET", proxy.upstream + self.path, headers=headers, timeout=60
                ) as answer:
                    self.send_response(answer.status_code)
                    self.send_header("content-type", answer.headers["content-type"])
                    self.end_headers()  # no length, no chunking: the body ends at close
                    for line in answer.iter_lines():
                        self.wfile.write(line.encode() + b"\n")
                        if not line:  # the first event is complete
                            break
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _StreamCuttingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


_PASSED = {"authorization", "content-type", "accept"}
