"""Datasets as a resource, end to end on both backends (real uvicorn, Celery worker and
pipeline): upload once and run several jobs on it, the built-in dataset, deleting one in use,
other owners' datasets, the CSV labels layout with its row errors, and the upload checks."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import (
    FINISHED,
    JOB_TIMEOUT_S,
    LONG,
    QUICK,
    UPLOAD_LIMIT,
    Service,
    assert_problem,
)
from .datasets import CLASS_SIZES, make_csv_zip, make_one_class_zip, make_zip

pytestmark = pytest.mark.slow
DEMO = "demo-mnist-1-2-3"


def upload(client: httpx.Client, data: bytes, name: str = "data.zip") -> httpx.Response:
    return client.post("/v1/datasets", files={"dataset": (name, data, "application/zip")})


def upload_ok(client: httpx.Client, data: bytes, name: str = "data.zip") -> dict:
    resp = upload(client, data, name)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/v1/datasets/{resp.json()['id']}"
    return resp.json()


def start(client: httpx.Client, dataset_id: str, config: dict | None = None) -> httpx.Response:
    body: dict = {"dataset_id": dataset_id}
    if config is not None:
        body["config"] = config
    return client.post("/v1/jobs", json=body)


def wait_finished(svc: Service, client: httpx.Client, job_id: str, timeout: float) -> dict:
    """The job once it ended; {"status": "deleted"} for a queued job that a DELETE removed."""
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json()).get("status") not in FINISHED:
        if job.get("status") == 404:
            return {"status": "deleted"}
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} stuck at {job}\n{svc.log_tail()}")
        time.sleep(0.3)
    return job


@pytest.fixture
def other(service: Service) -> Iterator[httpx.Client]:
    client = service.client_for(service.create_key("another owner", owner="someone-else"))
    yield client
    client.close()


def stored_zip(svc: Service, dataset_id: str) -> Path:
    return svc.data_dir / "datasets" / f"{dataset_id}.zip"


def test_upload_once_and_run_two_jobs_with_different_configs(
    service: Service, dataset_zip: bytes
) -> None:
    client = service.client
    dataset = upload_ok(client, dataset_zip, "shapes.zip")
    assert dataset["name"] == "shapes.zip" and dataset["builtin"] is False
    assert dataset["classes"] == sorted(CLASS_SIZES)
    assert {c: v["train"] + v["test"] for c, v in dataset["counts"].items()} == CLASS_SIZES
    assert dataset["test_source"] == "split" and dataset["layout"] == "folders"
    assert dataset["image_size"] == {"min": [16, 16], "max": [16, 16]}
    assert dataset["mode"] == "grayscale" and dataset["warnings"] == []
    assert dataset["size_bytes"] == len(dataset_zip)
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    listed = client.get("/v1/datasets", params={"limit": 100}).json()
    assert dataset["id"] in [d["id"] for d in listed["items"]]

    first = start(client, dataset["id"], {**QUICK, "seed": 1})
    second = start(client, dataset["id"], {**QUICK, "seed": 2, "classifier_augment": "none"})
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.headers["location"] == f"/v1/jobs/{first.json()['id']}"
    jobs = [wait_finished(service, client, r.json()["id"], JOB_TIMEOUT_S) for r in (first, second)]
    for job in jobs:
        assert job["status"] == "succeeded", (job, service.log_tail())
        assert job["dataset_id"] == dataset["id"]
        assert job["links"]["dataset"] == f"/v1/datasets/{dataset['id']}"
    assert [j["config"]["seed"] for j in jobs] == [1, 2]
    assert jobs[1]["config"]["classifier_augment"] == "none"
    reports = [client.get(f"/v1/jobs/{j['id']}/report").json() for j in jobs]
    for report in reports:
        assert {c["name"] for c in report["classes"]} == set(CLASS_SIZES)
    # Deleting the jobs leaves the dataset; nothing was uploaded twice.
    for job in jobs:
        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 200
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert_problem(client.get(f"/v1/datasets/{dataset['id']}"), 404)


def test_builtin_dataset_is_listed_and_runs_a_job(service: Service) -> None:
    client = service.client
    page = client.get("/v1/datasets").json()
    assert page["items"][0]["id"] == DEMO and page["items"][0]["builtin"] is True
    demo = client.get(f"/v1/datasets/{DEMO}").json()
    assert demo["classes"] == ["1", "2", "3"] and demo["test_source"] == "explicit"
    assert demo["counts"]["1"] == {"train": 10, "test": 200}
    assert demo["counts"]["2"] == {"train": 300, "test": 200}
    assert demo["image_size"] == {"min": [28, 28], "max": [28, 28]}
    body = assert_problem(client.delete(f"/v1/datasets/{DEMO}"), 409)
    assert "built in" in body["detail"]

    resp = start(client, DEMO, QUICK)
    assert resp.status_code == 202, resp.text
    job = wait_finished(service, client, resp.json()["id"], 4 * JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", (job, service.log_tail())
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    counts = {c["name"]: c["train_count"] for c in report["classes"]}
    assert counts == {"1": 10, "2": 300, "3": 300}


def test_a_dataset_in_use_cannot_be_deleted(service: Service, dataset_zip: bytes) -> None:
    client = service.client
    dataset = upload_ok(client, dataset_zip)
    job = start(client, dataset["id"], LONG).json()
    body = assert_problem(client.delete(f"/v1/datasets/{dataset['id']}"), 409)
    assert body["jobs"] == [job["id"]] and "cancel" in body["detail"]
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
    if service.backend == "embedded":  # local files: the zip is still there, byte for byte
        assert stored_zip(service, dataset["id"]).read_bytes() == dataset_zip
    client.delete(f"/v1/jobs/{job['id']}")
    assert wait_finished(service, client, job["id"], 30)["status"] in ("canceled", "deleted")
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    assert not stored_zip(service, dataset["id"]).exists()
    assert_problem(client.delete(f"/v1/datasets/{dataset['id']}"), 404)
    assert client.get(f"/v1/jobs/{job['id']}").json().get("status") in ("canceled", 404)
    # A job on a deleted dataset is refused.
    assert_problem(start(client, dataset["id"], QUICK), 404)


def test_another_owners_dataset_is_not_found(
    service: Service, dataset_zip: bytes, other: httpx.Client
) -> None:
    dataset = upload_ok(service.client, dataset_zip)
    unknown = "0b7e0d52-5c4f-4c59-9d0e-3f1c1f0f2a11"
    for dataset_id in (dataset["id"], unknown):
        body = assert_problem(other.get(f"/v1/datasets/{dataset_id}"), 404)
        assert body["detail"] == f"no dataset with id {dataset_id}"
        assert_problem(other.delete(f"/v1/datasets/{dataset_id}"), 404)
        assert_problem(start(other, dataset_id, QUICK), 404)
    listed = other.get("/v1/datasets").json()
    assert [d["id"] for d in listed["items"]] == [DEMO] and listed["total"] == 1
    assert service.client.get(f"/v1/datasets/{dataset['id']}").status_code == 200


def test_multipart_job_keeps_its_zip_as_a_dataset(service: Service, dataset_zip: bytes) -> None:
    client = service.client
    files = {"dataset": ("shapes.zip", dataset_zip, "application/zip")}
    job = client.post("/v1/jobs", files=files, data={"config": json.dumps(LONG)}).json()
    dataset = client.get(f"/v1/datasets/{job['dataset_id']}").json()
    assert dataset["name"] == "shapes.zip" and dataset["classes"] == sorted(CLASS_SIZES)
    assert client.delete(f"/v1/jobs/{job['id']}").status_code in (202, 204)
    wait_finished(service, client, job["id"], 30)
    assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204


def test_csv_layout_end_to_end(service: Service, tmp_path: Path) -> None:
    client = service.client
    data = make_csv_zip(tmp_path / "csv.zip", test_per_class=2, unnamed=2).read_bytes()
    dataset = upload_ok(client, data)
    assert dataset["layout"] == "csv" and dataset["test_source"] == "explicit"
    assert dataset["counts"] == {c: {"train": n - 2, "test": 2} for c, n in CLASS_SIZES.items()}
    [warning] = dataset["warnings"]
    assert "2 image(s)" in warning and "images/unnamed_0.png" in warning
    job = start(client, dataset["id"], QUICK).json()
    job = wait_finished(service, client, job["id"], JOB_TIMEOUT_S)
    assert job["status"] == "succeeded", (job, service.log_tail())
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    assert {c["name"]: c["test_count"] for c in report["classes"]} == dict.fromkeys(CLASS_SIZES, 2)
    assert any("unnamed_0.png" in w for w in report["dataset"]["warnings"])
    balanced = client.get(f"/v1/jobs/{job['id']}/balanced-dataset")
    with zipfile.ZipFile(io.BytesIO(balanced.content)) as zf:
        assert {n.split("/")[0] for n in zf.namelist() if "/" in n} == set(CLASS_SIZES)


@pytest.mark.parametrize(
    ("rows", "rule", "line", "words"),
    [
        (("images/missing.png,circle",), "csv_unknown_file", 53, "not in the zip"),
        (("images/0000.png,square",), "csv_duplicate_row", 53, "first on line 2"),
        (("images/0001.png,",), "csv_empty_label", 53, "empty label"),
        ((",circle",), "csv_empty_file", 53, "no file name"),
        (("images/0002.png,../up",), "csv_bad_label", 53, "slash"),
    ],
)
def test_csv_row_errors_name_the_row(
    service: Service, tmp_path: Path, rows: tuple[str, ...], rule: str, line: int, words: str
) -> None:
    data = make_csv_zip(tmp_path / "bad.zip", extra_rows=rows).read_bytes()
    body = assert_problem(upload(service.client, data), 422)
    assert body["rule"] == rule and body["entry"] == f"labels.csv:{line}", body
    assert f"labels.csv line {line}" in body["detail"] and words in body["detail"], body


def test_csv_errors_are_reported_together(service: Service, tmp_path: Path) -> None:
    rows = ("images/nope.png,circle", "images/0000.png,circle", ",circle", "images/0003.png,x,val")
    data = make_csv_zip(tmp_path / "bad.zip", extra_rows=rows).read_bytes()
    body = assert_problem(upload(service.client, data), 422)
    assert body["detail"].startswith("4 rows of labels.csv are wrong"), body
    for line in (53, 54, 55, 56):
        assert f"line {line}" in body["detail"]


def test_door_checks_apply_to_datasets(service: Service, tmp_path: Path) -> None:
    client = service.client
    before = client.get("/v1/datasets").json()["total"]
    assert assert_problem(upload(client, b"not a zip"), 422)["rule"] == "not_a_zip"
    one = make_one_class_zip(tmp_path / "one.zip").read_bytes()
    assert assert_problem(upload(client, one), 422)["rule"] == "too_few_classes"
    big = make_zip(tmp_path / "big.zip").read_bytes() + b"\0" * (UPLOAD_LIMIT + 2 * 1024**2)
    assert_problem(upload(client, big), 413)
    with service.client_for(None) as anonymous:
        assert_problem(upload(anonymous, one), 401)
    body = assert_problem(client.post("/v1/datasets", data={"x": "1"}), 422)
    assert any(e["loc"][-1] == "dataset" for e in body["errors"])
    assert client.get("/v1/datasets").json()["total"] == before
    leftovers = [p.name for p in (service.data_dir / "datasets").iterdir()]
    assert all(p.endswith(".zip") for p in leftovers)  # no staged upload is left behind


def test_json_job_body_problems(service: Service) -> None:
    client = service.client
    assert_problem(start(client, "no-such-dataset"), 404)
    body = assert_problem(start(client, DEMO, {"epochs": 0}), 422)
    assert "epochs" in body["detail"]
    assert "colour" in assert_problem(start(client, DEMO, {"colour": 1}), 422)["detail"]
    assert "seed" in assert_problem(start(client, DEMO, {"seed": "1"}), 422)["detail"]
    body = assert_problem(client.post("/v1/jobs", json={"dataset": DEMO}), 422)
    assert any(e["loc"][-1] == "dataset_id" for e in body["errors"])
    assert_problem(
        client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}), 422
    )
    assert_problem(
        client.post("/v1/jobs", content=b"x", headers={"content-type": "text/plain"}), 415
    )
