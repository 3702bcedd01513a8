"""Prometheus figures of a real API and a real `balancer worker --metrics-port` process, on
both backends: scraped before, during and after jobs, they must move with what happens."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    BACKENDS,
    FINISHED,
    LONG,
    QUICK,
    Service,
    _free_port,
    running_service,
    service_env,
)

pytestmark = pytest.mark.slow

STAGES = ("validating", "training_gan", "training_classifier", "evaluating", "packaging")
WAIT_S = 120
JOB_WAIT_S = 600  # a whole quick job on a loaded 2-core machine


@pytest.fixture(scope="module", params=BACKENDS)
def stack(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[tuple[Service, str]]:  # noqa: ANN001
    """A service whose worker serves /metrics; (service, the worker's metrics URL)."""
    data_dir = tmp_path_factory.mktemp(f"metrics-{request.param}")
    env = service_env(request, data_dir)
    if request.param == "postgres_redis":  # not the queue of the session's other service
        env["BALANCER_QUEUE"] += "-metrics"
    port = _free_port()
    options = ("--metrics-port", str(port))
    with running_service(request.param, env, data_dir, options) as svc:
        yield svc, f"http://127.0.0.1:{port}/metrics"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text page."""
    answer = httpx.get(url, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(figures: dict, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check: Callable[[], bool], what: str, seconds: float = WAIT_S) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_figures_move_as_jobs_run(stack: tuple[Service, str], dataset_zip: bytes) -> None:
    svc, worker_url = stack
    api_url = svc.base_url + "/metrics"
    # No API key needed for either.
    assert httpx.get(api_url, timeout=30).status_code == 200
    wait_for(
        lambda: value(scrape(worker_url), "balancer_worker_warm_up", state="skipped") == 1,
        "the worker's warm-up to be skipped on this CPU",
    )
    before = scrape(api_url)
    assert value(before, "balancer_metrics_database_up") == 1
    worker = scrape(worker_url)
    assert value(worker, "balancer_worker_jobs_in_progress") == 0
    assert value(worker, "balancer_worker_gpu_memory_bytes") == 0  # no GPU here
    assert ("balancer_worker_gpu_memory_peak_bytes", ()) in worker

    # A long job runs: the worker counts it, the API sees it running; a second one queues.
    files = {"dataset": ("data.zip", dataset_zip, "application/zip")}
    long_job = svc.client.post("/v1/jobs", files=files, data={"config": _json(LONG)}).json()
    wait_for(
        lambda: (
            value(scrape(worker_url), "balancer_worker_jobs_in_progress") == 1
            and value(scrape(api_url), "balancer_jobs", status="running") == 1
        ),
        "the worker and the database to report one job running",
    )
    waiting = svc.client.post("/v1/jobs", files=files, data={"config": _json(QUICK)}).json()
    queued = scrape(api_url)
    assert value(queued, "balancer_queue_depth") == 1
    assert value(queued, "balancer_jobs", status="queued") == 1

    # Both cancelled: the queued one by the API, the running one by its worker.
    assert svc.client.delete(f"/v1/jobs/{waiting['id']}").status_code == 204
    assert svc.client.delete(f"/v1/jobs/{long_job['id']}").status_code == 202
    wait_for(
        lambda: value(scrape(worker_url), "balancer_worker_jobs_in_progress") == 0,
        "the worker to report no job in progress",
    )
    wait_for(
        lambda: (
            value(scrape(api_url), "balancer_jobs_finished_total", outcome="canceled")
            == value(before, "balancer_jobs_finished_total", outcome="canceled") + 2
        ),
        "two cancellations to be counted",
    )
    canceled = scrape(api_url)
    # Only the job that had started has a run time.
    assert _count(canceled, "balancer_job_duration_seconds", outcome="canceled") == 1 + _count(
        before, "balancer_job_duration_seconds", outcome="canceled"
    )

    # A job that succeeds: counted, timed as a whole and per stage.
    done = svc.client.post("/v1/jobs", files=files, data={"config": _json(QUICK)}).json()
    wait_for(lambda: _status(svc, done["id"]) in FINISHED, "the quick job to end", JOB_WAIT_S)
    assert _status(svc, done["id"]) == "succeeded", svc.log_tail()
    after = scrape(api_url)
    assert value(after, "balancer_jobs_finished_total", outcome="succeeded") == 1 + value(
        before, "balancer_jobs_finished_total", outcome="succeeded"
    )
    assert _count(after, "balancer_job_duration_seconds", outcome="succeeded") == 1 + _count(
        before, "balancer_job_duration_seconds", outcome="succeeded"
    )
    for stage in STAGES:
        assert _count(after, "balancer_stage_duration_seconds", stage=stage) == 1 + _count(
            before, "balancer_stage_duration_seconds", stage=stage
        )
    assert value(after, "balancer_stage_duration_seconds_sum", stage="training_gan") > 0
    assert value(after, "balancer_jobs", status="running") == 0
    # Deleting a finished job takes it out of the status gauge, never out of the counters.
    assert svc.client.delete(f"/v1/jobs/{done['id']}").status_code == 204
    deleted = scrape(api_url)
    assert value(deleted, "balancer_jobs", status="succeeded") == 0
    for name, labels in (
        ("balancer_jobs_finished_total", {"outcome": "succeeded"}),
        ("balancer_job_duration_seconds_count", {"outcome": "succeeded"}),
        ("balancer_stage_duration_seconds_count", {"stage": "packaging"}),
    ):
        assert value(deleted, name, **labels) == value(after, name, **labels)

    # Uploads: bytes received; a refused one counted by its rule.
    grew = value(after, "balancer_upload_bytes_total", outcome="accepted") - value(
        before, "balancer_upload_bytes_total", outcome="accepted"
    )
    assert grew >= 3 * len(dataset_zip)
    refused = svc.client.post("/v1/jobs", files={"dataset": ("x.zip", b"not a zip")})
    assert refused.status_code == 422
    last = scrape(api_url)
    assert value(last, "balancer_uploads_refused_total", rule="not_a_zip", status="422") == 1 + (
        value(before, "balancer_uploads_refused_total", rule="not_a_zip", status="422")
    )
    # Requests by route template, never by job id.
    route = "/v1/jobs/{job_id}"
    assert value(last, "balancer_http_requests_total", method="GET", route=route, status="200") > 0
    assert not any(done["id"] in str(labels) for _, labels in last)


@pytest.mark.slow
def test_dataset_figures(stack: tuple[Service, str], dataset_zip: bytes) -> None:
    """balancer_datasets and balancer_dataset_bytes: uploaded datasets, not built-in ones."""
    svc, _ = stack
    api_url = svc.base_url + "/metrics"
    before = scrape(api_url)
    files = {"dataset": ("data.zip", dataset_zip, "application/zip")}
    created = svc.client.post("/v1/datasets", files=files)
    assert created.status_code == 201, created.text
    grown = scrape(api_url)
    assert value(grown, "balancer_datasets") == value(before, "balancer_datasets") + 1
    assert value(grown, "balancer_dataset_bytes") == (
        value(before, "balancer_dataset_bytes") + len(dataset_zip)
    )
    assert value(grown, "balancer_upload_bytes_total", outcome="accepted") >= len(dataset_zip)
    assert svc.client.delete(f"/v1/datasets/{created.json()['id']}").status_code == 204
    after = scrape(api_url)
    assert value(after, "balancer_datasets") == value(before, "balancer_datasets")
    assert value(after, "balancer_dataset_bytes") == value(before, "balancer_dataset_bytes")


def _count(figures: dict, histogram: str, **labels: str) -> float:
    return value(figures, histogram + "_count", **labels)


def _status(svc: Service, job_id: str) -> str:
    return svc.client.get(f"/v1/jobs/{job_id}").json()["status"]


def _json(config: dict) -> str:
    import json

    return json.dumps(config)
