"""Live progress: eta_seconds, the Server-Sent Events stream and report.html, against a real
API and worker (both backends); the ETA formula on its own."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from app.schemas import eta_seconds
from jobs.models import Job

from .conftest import Service

pytestmark = pytest.mark.slow

# Long enough (~7 s of GAN steps on 2 idle cores, progress written often) that the stream sees the
# job running with an ETA; short enough for a loaded 2-core machine.
TRACKED = {
    "preset": "quick",
    "gan_iterations": 200,
    "gan_batch": 8,
    "progress_every": 2,
    "epochs": 1,
    "seeds": 1,
    # The smallest transfer fit for "stripe" (9 images): the GAN steps above set the pace.
    "transfer_pairs": 16,
    "transfer_steps": 5,
}
STREAM_TIMEOUT_S = 180
Event = tuple[str, dict]


def submit(svc: Service, data: bytes, config: dict) -> dict:
    files = {"dataset": ("data.zip", data, "application/zip")}
    resp = svc.client.post("/v1/jobs", files=files, data={"config": json.dumps(config)})
    assert resp.status_code == 202, resp.text
    return resp.json()


def parse_sse(lines: list[str]) -> list[Event]:
    """(event name, JSON data) per event; comments (keep-alives) are skipped."""
    events, name, data = [], "message", []
    for line in [*lines, ""]:
        if not line:
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
    return events


def read_stream(svc: Service, job_id: str) -> list[Event]:
    """The whole stream, until the server closes it."""
    deadline = time.monotonic() + STREAM_TIMEOUT_S
    lines: list[str] = []
    timeout = httpx.Timeout(30, read=30)  # keep-alives come every 15 s at the latest
    with svc.client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["cache-control"].startswith("no-cache")
        for line in resp.iter_lines():
            lines.append(line)
            if time.monotonic() > deadline:
                pytest.fail(f"stream still open after {STREAM_TIMEOUT_S} s\n{svc.log_tail()}")
    return parse_sse(lines)


def test_events_follow_a_job_to_the_end(service: Service, dataset_zip: bytes) -> None:
    job = submit(service, dataset_zip, TRACKED)
    early = service.client.get(f"/v1/jobs/{job['id']}/report.html")
    assert early.status_code == 409, early.text
    assert early.headers["content-type"].startswith("application/problem+json")

    events = read_stream(service, job["id"])
    names = [name for name, _ in events]
    assert names[-1] == "end" and names.count("end") == 1, names
    assert set(names[:-1]) == {"progress"}, names
    assert events[-1][1] == {"status": "succeeded", "error": None}, service.log_tail()

    updates = [data for _, data in events[:-1]]
    assert all(set(u) == {"status", "stage", "progress", "eta_seconds"} for u in updates)
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress), progress
    assert len(set(progress)) >= 3, progress
    assert updates[-1]["status"] == "succeeded" and updates[-1]["progress"] == 1.0
    running = [u for u in updates if u["status"] == "running"]
    assert running, updates
    assert "training_gan" in {u["stage"] for u in running}, running
    with_eta = [u for u in running if u["eta_seconds"] is not None]
    assert with_eta, f"no ETA while running: {running}"
    assert all(isinstance(u["eta_seconds"], int) and u["eta_seconds"] >= 0 for u in with_eta)
    assert all(u["progress"] >= 0.05 for u in with_eta)
    assert updates[-1]["eta_seconds"] is None


def test_finished_job_report_html_and_a_short_stream(service: Service, dataset_zip: bytes) -> None:
    job = submit(service, dataset_zip, TRACKED | {"gan_iterations": 10})
    read_stream(service, job["id"])  # until it ends
    done = service.client.get(f"/v1/jobs/{job['id']}").json()
    assert done["status"] == "succeeded" and done["eta_seconds"] is None
    assert done["links"]["report_html"] == f"/v1/jobs/{job['id']}/report.html"

    page = service.client.get(done["links"]["report_html"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="per-class-table"' in page.text

    # A finished job's stream: where it stands, then the end, at once.
    events = read_stream(service, job["id"])
    assert [name for name, _ in events] == ["progress", "end"]
    assert events[0][1]["progress"] == 1.0 and events[1][1]["status"] == "succeeded"


def test_events_are_scoped_by_owner(service: Service, dataset_zip: bytes) -> None:
    job = submit(service, dataset_zip, TRACKED | {"gan_iterations": 10})
    path = f"/v1/jobs/{job['id']}/events"
    other_key = service.create_key("events-other", owner="events-someone-else")
    with service.client_for(other_key) as other, service.client_for(None) as anonymous:
        refused = other.get(path)
        assert refused.status_code == 404, refused.text
        assert refused.json()["detail"] == f"no job with id {job['id']}"
        assert anonymous.get(path).status_code == 401
    read_stream(service, job["id"])  # let it end before the next test


@pytest.mark.parametrize(
    "job_id", [str(uuid.uuid4()), "not-a-uuid"], ids=["unknown-uuid", "not-a-uuid"]
)
def test_events_of_an_unknown_job_are_404(service: Service, job_id: str) -> None:
    resp = service.client.get(f"/v1/jobs/{job_id}/events")
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.json()["detail"] == f"no job with id {job_id}"


NOW = datetime(2025, 1, 1, 12, tzinfo=timezone.utc)  # noqa: UP017 (project targets 3.10)


def _job(status: str = "running", progress: float = 0.5, elapsed_s: float | None = 60) -> Job:
    started = None if elapsed_s is None else NOW - timedelta(seconds=elapsed_s)
    return Job(status=status, progress=progress, started_at=started)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (_job(progress=0.5, elapsed_s=60), 60),  # half done in a minute: a minute to go
        (_job(progress=0.25, elapsed_s=30), 90),
        (_job(progress=1.0, elapsed_s=30), 0),
        (_job(progress=0.04, elapsed_s=600), None),  # too little progress to tell
        (_job(progress=0.5, elapsed_s=1), None),  # too little time to tell
        (_job(elapsed_s=None), None),  # not started
        (_job(status="queued"), None),
        (_job(status="succeeded", progress=1.0), None),
        (_job(status="failed"), None),
    ],
)
def test_eta_seconds(job: Job, expected: int | None) -> None:
    assert eta_seconds(job, now=NOW) == expected
