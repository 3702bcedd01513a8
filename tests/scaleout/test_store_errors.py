"""A misconfigured object store, seen by a person: the real app (in this process, on SQLite)
and the real worker code against a real S3 server (rclone) with wrong credentials or a
missing bucket. An upload gets a 503 problem+json that names the fault, and leaves no job and
no file; a job whose worker cannot use the store fails with a readable error, never a 500 or
a job stuck in running."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import migrations
from app.auth import create_key
from app.main import create_app
from jobs import storage as storage_module
from jobs.db import make_engine, make_sessionmaker
from jobs.settings import Settings
from tests.service.conftest import assert_problem
from tests.service.datasets import make_zip

from .s3servers import BUCKET, RcloneS3, S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
TINY = {
    "preset": "quick",
    "gan_iterations": 1,
    "epochs": 1,
    "seeds": 1,
    "gan_width": 8,
    "evaluation": "holdout",  # one run a job (cross-validation: tests/pipeline/test_crossval.py)
}
FAULTS = {
    "wrong-credentials": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, BUCKET, "refused our credentials"),
    "missing-bucket": ({}, "no-such-bucket", "the bucket 'no-such-bucket' does not exist"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    s3 = RcloneS3(tmp_path_factory.mktemp("rclone")).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture(autouse=True)
def fresh_storage() -> Iterator[None]:
    """Storage objects are cached per settings; the credentials change between tests."""
    storage_module._open.cache_clear()
    yield
    storage_module._open.cache_clear()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_zip(tmp_path_factory.mktemp("data") / "data.zip").read_bytes()


def make_settings(server: S3Server, data_dir: Path, bucket: str) -> Settings:
    settings = Settings(
        data_dir=data_dir, database_url="", broker_url="", sweep_interval_s=0, warm_up=False,
        storage_url=f"s3://{bucket}/errors", s3_endpoint_url=server.endpoint,
    )  # fmt: skip
    settings.ensure_dirs()
    migrations.upgrade(settings.database_url)
    return settings


def client_for(settings: Settings) -> TestClient:
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        _, key = create_key(session, "errors", "errors")
    return TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"})


@pytest.mark.parametrize("fault", FAULTS)
def test_an_upload_to_a_misconfigured_store_is_a_503_naming_the_fault(
    server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    dataset: bytes,
    fault: str,
) -> None:
    env, bucket, says = FAULTS[fault]
    for name, value in (server.env() | env).items():
        monkeypatch.setenv(name, value)
    settings = make_settings(server, tmp_path, bucket)
    with client_for(settings) as client:
        files = {"dataset": ("d.zip", dataset, "application/zip")}
        resp = client.post("/v1/jobs", files=files, data={"config": '{"preset": "quick"}'})
        body = assert_problem(resp, 503)
        assert body["type"].endswith("/storage-unavailable") and says in body["detail"], body
        assert resp.headers["retry-after"]
        assert client.get("/v1/jobs").json()["total"] == 0, "no job was created"
        ready = client.get("/readyz")
        assert_problem(ready, 503)
        assert says in ready.json()["checks"]["storage"]
    assert list(settings.jobs_dir.iterdir()) == [], "the staged upload was removed"
    assert list(settings.datasets_dir.iterdir()) == [], "the staged dataset was removed"
    assert server.object_keys() == []


def test_a_worker_that_cannot_use_the_store_fails_the_job_readably(
    server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: bytes
) -> None:
    from worker import tasks

    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    api = make_settings(server, tmp_path / "api", BUCKET)
    with client_for(api) as client:
        files = {"dataset": ("d.zip", dataset, "application/zip")}
        job = client.post("/v1/jobs", files=files, data={"config": json.dumps(TINY)})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        # A worker host whose secret is wrong, on the same database, with scratch of its own.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
        storage_module._open.cache_clear()
        worker = api.model_copy(update={"data_dir": tmp_path / "worker"})
        worker.ensure_dirs()
        tasks.run(worker, make_sessionmaker(make_engine(api.database_url)), uuid.UUID(job_id))

        done = client.get(f"/v1/jobs/{job_id}").json()
        assert done["status"] == "failed", done
        assert (
            "refused our credentials" in done["error"] and "fetching the dataset" in done["error"]
        )
    assert list(worker.jobs_dir.iterdir()) == [], "no scratch left on the worker"
    assert server.object_keys() == [f"errors/datasets/{job.json()['dataset_id']}.zip"]
