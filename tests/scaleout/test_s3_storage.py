"""The S3 backend of jobs/storage/ against real S3 servers (rclone and SeaweedFS): the
multipart upload, the worker's copy, publishing, presigned and streamed downloads, deletion,
the orphan listing, and the errors a person sees when the store is misconfigured or gone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from jobs.storage import StorageUnavailable
from jobs.storage.s3 import S3Storage

from .s3servers import BUCKET, RcloneS3, S3Server, SeaweedS3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MiB = 1024**2
PART = 5 * MiB  # S3's smallest part: a 12 MiB upload goes in 3 parts


@pytest.fixture(scope="module", params=[RcloneS3, SeaweedS3], ids=["rclone", "seaweedfs"])
def server(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[S3Server]:  # noqa: ANN001
    s3 = request.param(tmp_path_factory.mktemp(request.param.kind)).start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture
def storage(server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3Storage:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return S3Storage(f"s3://{BUCKET}/t", tmp_path / "scratch", server.endpoint, part_size=PART)


def later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=5)  # noqa: UP017


def stage_upload(storage: S3Storage, job_id: uuid.UUID, data: bytes) -> None:
    folder = storage.scratch / str(job_id)
    folder.mkdir(parents=True)
    (folder / "upload.zip").write_bytes(data)


def test_an_upload_travels_to_a_worker_and_its_outputs_back(
    storage: S3Storage, server: S3Server, tmp_path: Path
) -> None:
    job_id = uuid.uuid4()
    upload = os.urandom(12 * MiB + 123)
    stage_upload(storage, job_id, upload)
    storage.keep_upload(job_id)
    assert not (storage.scratch / str(job_id)).exists(), "the staged upload is removed"
    assert server.object_keys() == [f"t/uploads/{job_id}.zip"]

    # A worker on another host: scratch of its own.
    worker = S3Storage(f"s3://{BUCKET}/t", tmp_path / "worker", server.endpoint, part_size=PART)
    copy = worker.fetch_upload(job_id, attempt=1)
    assert copy.read_bytes() == upload
    work = copy.parent / "attempt-1"
    (work / "sub").mkdir(parents=True)
    files = {"balanced.zip": os.urandom(6 * MiB), "report.html": b"<p>r</p>", "sub/x.png": b"x"}
    for name, data in files.items():
        (work / name).write_bytes(data)
    checks: list[str] = []
    stored = worker.publish(job_id, work, lambda: checks.append("asked"))
    assert len(checks) == len(files), "the lease is checked before each file"
    assert {a.name: (a.size, a.sha256) for a in stored} == {
        n: (len(d), hashlib.sha256(d).hexdigest()) for n, d in files.items()
    }
    assert {a.key for a in stored} == {f"t/jobs/{job_id}/{n}" for n in files}
    worker.release_scratch(job_id, 1)
    assert list((tmp_path / "worker").iterdir()) == [], "no scratch left on the worker"

    presigned = storage.download(job_id, "balanced.zip", filename="b.zip")
    got = httpx.get(presigned.url)
    assert got.status_code == 200 and got.content == files["balanced.zip"]
    assert got.headers["content-disposition"] == 'attachment; filename="b.zip"'
    storage.presign = False
    streamed = storage.download(job_id, "report.html")
    assert streamed.size == len(files["report.html"])
    assert b"".join(streamed.chunks) == files["report.html"]

    assert job_id in storage.stored_jobs(later())
    assert job_id not in storage.stored_jobs(datetime.now(timezone.utc) - timedelta(hours=1))  # noqa: UP017
    storage.delete_job(job_id)
    assert server.object_keys() == []


def test_a_presigned_url_expires_and_is_signed(storage: S3Storage, server: S3Server) -> None:
    job_id = uuid.uuid4()
    work = storage.scratch / "w"
    work.mkdir(parents=True)
    (work / "samples.png").write_bytes(b"png")
    storage.publish(job_id, work, lambda: None)
    url = storage.download(job_id, "samples.png").url
    assert "X-Amz-Expires=300" in url and "X-Amz-Signature=" in url
    tampered = url.replace("samples.png", "samples.PNG")
    assert httpx.get(tampered).status_code == 403
    storage.delete_job(job_id)


@pytest.mark.parametrize(
    ("url", "secret", "says"),
    [
        (f"s3://{BUCKET}", "wrong-secret", "refused our credentials"),
        ("s3://no-such-bucket", None, "the bucket 'no-such-bucket' does not exist"),
    ],
    ids=["wrong-credentials", "missing-bucket"],
)
def test_misconfiguration_is_named(
    server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    secret: str | None,
    says: str,
) -> None:
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    if secret:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage = S3Storage(url, tmp_path, server.endpoint)
    with pytest.raises(StorageUnavailable, match=says):
        storage.check()
    job_id = uuid.uuid4()
    stage_upload(storage, job_id, b"zip")
    with pytest.raises(StorageUnavailable, match="storing the upload"):
        storage.keep_upload(job_id)


def test_a_store_that_is_gone_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability.stack import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    storage = S3Storage(f"s3://{BUCKET}", tmp_path, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageUnavailable, match="is unreachable .* while fetching the upload"):
        storage.fetch_upload(uuid.uuid4(), 1)


def test_storage_init_creates_the_bucket_once(server: S3Server, tmp_path: Path) -> None:
    from tests.reliability.stack import ROOT, python_path

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "AWS_"))}
    env |= server.env(BALANCER_STORAGE_URL="s3://fresh-bucket/x") | {"PYTHONPATH": python_path()}
    env |= {"BALANCER_DATA_DIR": str(tmp_path)}

    def init(**extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "cli.main", "storage", "init"]
        return subprocess.run(cmd, cwd=ROOT, env=env | extra, capture_output=True, text=True)

    first, second = init(), init()
    assert first.returncode == 0 and "created, usable" in first.stdout, first.stderr
    assert second.returncode == 0 and "exists, usable" in second.stdout, second.stderr
    refused = init(AWS_SECRET_ACCESS_KEY="wrong")
    assert refused.returncode == 1 and "refused our credentials" in refused.stderr
