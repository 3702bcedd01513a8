"""The HTTP API end to end: real uvicorn, real Celery worker, real pipeline, on both backends."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import (
    CANCEL_WITHIN_S,
    FINISHED,
    JOB_TIMEOUT_S,
    LONG,
    QUICK,
    UPLOAD_LIMIT,
    Service,
    assert_problem,
)
from .datasets import (
    CLASS_SIZES,
    make_corrupt_image_zip,
    make_one_class_zip,
)

pytestmark = pytest.mark.slow


def submit(svc: Service, data: bytes, config: dict | None = None) -> httpx.Response:
    form = {"config": json.dumps(config)} if config is not None else {}
    files = {"dataset": ("data.zip", data, "application/zip")}
    return svc.client.post("/v1/jobs", files=files, data=form)


def submit_ok(svc: Service, data: bytes, config: dict) -> dict:
    resp = submit(svc, data, config)
    assert resp.status_code == 202, resp.text
    return resp.json()


def wait_for(svc: Service, job_id: str, done, timeout: float = JOB_TIMEOUT_S) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        job = svc.client.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stuck at {job}\n{svc.log_tail()}")
        time.sleep(0.2)


def test_health(service: Service) -> None:
    assert service.client.get("/healthz").json()["status"] == "ok"
    ready = service.client.get("/readyz").json()
    assert ready["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}


def test_upload_poll_and_download(service: Service, dataset_zip: bytes) -> None:
    resp = submit(service, dataset_zip, {**QUICK, "classifier_augment": "affine+flip"})
    assert resp.status_code == 202, resp.text
    created = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{created['id']}"
    assert created["status"] == "queued"
    assert created["config"]["gan_iterations"] == 20
    assert created["config"]["classifier_augment"] == "affine+flip"

    job = wait_for(service, created["id"], lambda j: j["status"] in FINISHED)
    assert job["status"] == "succeeded", (job, service.log_tail())
    assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
    assert job["started_at"] and job["finished_at"] >= job["started_at"]
    base = f"/v1/jobs/{job['id']}"
    assert job["links"]["balanced_dataset"] == f"{base}/balanced-dataset"

    report = service.client.get(f"{base}/report").json()
    classes = {c["name"]: c for c in report["classes"]}
    assert set(classes) == set(CLASS_SIZES)
    assert set(report["methods"]) == {"baseline", "oversample", "gan"}
    assert report["classifier_augmentation"]["horizontal_flip"] is True

    rows = service.client.get(f"{base}/classes").json()
    assert len(rows) == len(CLASS_SIZES) * 3
    for row in rows:
        cls = classes[row["class_name"]]
        assert row["train_count"] == cls["train_count"]
        assert row["test_count"] == cls["test_count"]
        synthetic = cls["synthetic_count"] if row["method"] == "gan" else 0
        assert row["synthetic_count"] == synthetic
        figures = report["methods"][row["method"]]["per_class"][row["class_name"]]
        assert row["accuracy"] == pytest.approx(figures["accuracy"])

    resp = service.client.get(f"{base}/balanced-dataset")
    assert resp.status_code == 200
    assert f'filename="balanced-{job["id"]}.zip"' in resp.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        per_class = Counter(n.split("/")[0] for n in zf.namelist() if "/" in n)
    expected = {
        n: c["train_count"] + c["synthetic_count"] + c["repeated_real_count"]
        for n, c in classes.items()
    }
    assert per_class == expected
    assert len(set(per_class.values())) == 1, "every class should be filled to the same size"

    resp = service.client.get(f"{base}/samples.png")
    assert resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG\r\n\x1a\n")

    page = service.client.get("/v1/jobs", params={"limit": 100}).json()
    assert job["id"] in [j["id"] for j in page["items"]]
    created_at = [j["created_at"] for j in page["items"]]
    assert created_at == sorted(created_at, reverse=True)


def test_not_a_zip_is_rejected_at_upload(service: Service) -> None:
    before = service.client.get("/v1/jobs").json()["total"]
    body = assert_problem(submit(service, b"definitely not a zip", QUICK), 422)
    assert body["rule"] == "not_a_zip"
    assert service.client.get("/v1/jobs").json()["total"] == before


def test_one_class_is_rejected_at_upload(service: Service, tmp_path: Path) -> None:
    data = make_one_class_zip(tmp_path / "one.zip").read_bytes()
    body = assert_problem(submit(service, data, QUICK), 422)
    assert body["rule"] == "too_few_classes"
    assert "class" in body["detail"]


def test_bad_config_is_rejected(service: Service, dataset_zip: bytes) -> None:
    resp = service.client.post(
        "/v1/jobs",
        files={"dataset": ("d.zip", dataset_zip, "application/zip")},
        data={"config": "{not json"},
    )
    assert "JSON" in assert_problem(resp, 422)["detail"]
    assert "epochs" in assert_problem(submit(service, dataset_zip, {"epochs": 0}), 422)["detail"]
    assert "colour" in assert_problem(submit(service, dataset_zip, {"colour": 1}), 422)["detail"]
    bad = assert_problem(submit(service, dataset_zip, {"classifier_augment": "rotate"}), 422)
    assert "classifier_augment must be one of auto, none, affine, affine+flip" in bad["detail"]


def test_missing_dataset_is_a_validation_problem(service: Service) -> None:
    body = assert_problem(service.client.post("/v1/jobs", data={"config": "{}"}), 422)
    assert any(e["loc"][-1] == "dataset" for e in body["errors"])


def test_oversized_upload_is_refused(service: Service) -> None:
    assert_problem(submit(service, b"\0" * (UPLOAD_LIMIT + 2 * 1024**2), QUICK), 413)


def test_corrupt_image_fails_the_job_with_a_message(service: Service, tmp_path: Path) -> None:
    data = make_corrupt_image_zip(tmp_path / "corrupt.zip").read_bytes()
    created = submit_ok(service, data, QUICK)
    job = wait_for(service, created["id"], lambda j: j["status"] in FINISHED)
    assert job["status"] == "failed", job
    assert "broken.png" in job["error"]
    body = assert_problem(service.client.get(f"/v1/jobs/{job['id']}/report"), 409)
    assert body["job_status"] == "failed"


def test_cancel_queued_and_running_jobs(service: Service, dataset_zip: bytes) -> None:
    running = submit_ok(service, dataset_zip, LONG)
    queued = submit_ok(service, dataset_zip, LONG)  # waits: the worker runs one job at a time
    wait_for(service, running["id"], lambda j: j["stage"] == "training_gan")

    body = assert_problem(service.client.get(f"/v1/jobs/{running['id']}/report"), 409)
    assert body["job_status"] == "running"
    assert_problem(service.client.get(f"/v1/jobs/{running['id']}/balanced-dataset"), 409)

    # A queued job is canceled and deleted at once: a 404 after, as for any deleted job.
    assert service.client.delete(f"/v1/jobs/{queued['id']}").status_code == 204
    assert_problem(service.client.get(f"/v1/jobs/{queued['id']}"), 404)

    resp = service.client.delete(f"/v1/jobs/{running['id']}")
    assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
    job = wait_for(service, running["id"], lambda j: j["status"] in FINISHED, CANCEL_WITHIN_S)
    assert job["status"] == "canceled", job

    # The queued job's message still reaches the worker, which must not start it: wait for
    # the worker to say it ignored the message (not a fixed sleep); the deleted job is gone.
    ignored = "no such job, message ignored"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while ignored not in service.log_tail(20_000):
        if time.monotonic() > deadline:
            pytest.fail(f"the worker never logged {ignored!r}\n{service.log_tail()}")
        time.sleep(0.2)
    assert_problem(service.client.get(f"/v1/jobs/{queued['id']}"), 404)

    # Deleting the finished job removes its files, not the dataset it ran on.
    job_dir = service.data_dir / "jobs" / running["id"]
    assert service.client.delete(f"/v1/jobs/{running['id']}").status_code == 204
    assert not job_dir.exists()
    assert_problem(service.client.get(f"/v1/jobs/{running['id']}"), 404)
    dataset = service.client.get(f"/v1/datasets/{running['dataset_id']}")
    assert dataset.status_code == 200, dataset.text


def test_unknown_ids_and_routes_are_404_problems(service: Service) -> None:
    unknown = uuid.uuid4()
    for path in ("", "/report", "/classes", "/balanced-dataset", "/samples.png"):
        body = assert_problem(service.client.get(f"/v1/jobs/{unknown}{path}"), 404)
        assert str(unknown) in body["detail"]
    assert_problem(service.client.delete(f"/v1/jobs/{unknown}"), 404)
    assert_problem(service.client.get("/v1/jobs/not-a-uuid"), 404)
    body = assert_problem(service.client.get("/no/such/route"), 404)
    assert body["type"] == "about:blank" and body["title"] == "Not Found"
    assert_problem(service.client.put("/v1/jobs"), 405)


def test_pagination_problem(service: Service) -> None:
    body = assert_problem(service.client.get("/v1/jobs", params={"limit": 0}), 422)
    assert body["errors"][0]["loc"] == ["query", "limit"]
