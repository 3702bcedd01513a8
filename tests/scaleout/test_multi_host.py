"""Several hosts with no shared disk, on this machine: two APIs (presigned and proxied
downloads) and two `balancer worker` processes, each with a private BALANCER_DATA_DIR, sharing
only PostgreSQL, Redis and a real S3 server (rclone).

Six jobs all succeed on both workers; every output downloads through both APIs with the
SHA-256 the database recorded; no upload or output is left on any host's disk. Then the
store goes away mid-job (the job fails with a readable error, never stays running), a worker
is SIGKILLed mid-GAN (the other finishes its job), and deleted jobs leave nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.reliability.stack import ROOT, START_TIMEOUT_S, TINY, TRAINING, Stack, wait_until
from tests.service.conftest import REDIS_URL, pg_database, redis_queue  # noqa: F401
from tests.service.datasets import make_zip

from .s3servers import BUCKET, RcloneS3

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(600)]

SMALL = {"circle": 12, "square": 6, "stripe": 6}
OUTPUTS = {"balanced.zip", "report.html", "report.json", "samples.png"}
ROUTES = {"balanced-dataset": "balanced.zip", "report.html": "report.html"}
ROUTES["samples.png"] = "samples.png"
JOBS_S = 420  # six jobs on two workers, sharing two loaded cores with everything else
RECOVERY_S = 240


class Cluster:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.s3 = RcloneS3(_mkdir(root / "s3")).start()
        env = self.s3.env() | env
        self.api = Stack(root / "api", **env).prepare()
        self.proxied = Stack(root / "api-proxied", **env, BALANCER_S3_PRESIGN="false")
        self.proxied.key = self.api.key
        self.proxied.client.headers["Authorization"] = f"Bearer {self.api.key}"
        self.hosts: dict[str, subprocess.Popen] = {}
        self.engine = sa.create_engine(env["BALANCER_DATABASE_URL"])

    def start_host(self, name: str, *args: str) -> subprocess.Popen:
        """`balancer worker ARGS` with a data folder no other process uses."""
        env = self.api.env | {"BALANCER_DATA_DIR": str(_mkdir(self.root / name))}
        log = self.root / f"{name}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "worker", *args], cwd=ROOT, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.api.workers.append(proc)
        self.api.logs.append(log)
        ready = lambda: "ready." in log.read_text()  # noqa: E731
        wait_until(ready, f"worker {name} to start", START_TIMEOUT_S, self.api.log_tail)
        self.hosts[name] = proc
        return proc

    def rows(self, *job_ids: str) -> dict[str, dict]:
        query = sa.text("SELECT id, status, attempts, worker_id, gpu, error FROM jobs")
        with self.engine.connect() as conn:
            found = {str(r.id): r._asdict() for r in conn.execute(query)}
        return {j: found[j] for j in job_ids}

    def artifacts(self, job_id: str) -> dict[str, tuple[str, int, str]]:
        query = sa.text("SELECT name, key, size, sha256 FROM artifacts WHERE job_id = :j")
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"j": uuid.UUID(job_id)})
            return {r.name: (r.key, r.size, r.sha256) for r in rows}

    def files_on_disk(self) -> dict[str, list[str]]:
        """What any host keeps under its jobs/ folder (logs live beside it, not in it)."""
        found = {}
        hosts = [self.root / name for name in self.hosts]
        for folder in (self.api.data_dir, self.proxied.data_dir, *hosts):
            jobs = folder / "jobs"
            found[folder.name] = sorted(str(p.relative_to(jobs)) for p in jobs.rglob("*"))
        return found

    def stop(self) -> None:
        self.api.stop()
        self.proxied.stop()
        self.s3.stop()
        self.engine.dispose()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database, redis_queue) -> Iterator[Cluster]:  # noqa: ANN001, F811
    env = {
        "BALANCER_DATABASE_URL": pg_database("multihost"),
        "BALANCER_BROKER_URL": REDIS_URL,
        "BALANCER_QUEUE": redis_queue,
        "BALANCER_WARM_UP": "false",
        "BALANCER_ORPHAN_SWEEP_INTERVAL_S": "2",
        "BALANCER_ORPHAN_GRACE_S": "3",
        "BALANCER_RESEND_QUEUED_AFTER_S": "120",  # jobs wait in the queue here; no resends
    }
    c = Cluster(tmp_path_factory.mktemp("multi-host"), env)
    try:
        c.api.start_api()
        c.proxied.start_api()
        c.start_host("host-a")
        c.start_host("host-b", "--gpus", "0")  # one Celery process, CUDA_VISIBLE_DEVICES=0
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_zip(tmp_path_factory.mktemp("data") / "small.zip", SMALL).read_bytes()


def succeeded(job: dict) -> bool:
    assert job["status"] not in {"failed", "canceled"}, job
    return job["status"] == "succeeded"


def test_six_jobs_run_on_both_hosts_and_leave_no_file_on_any_disk(
    cluster: Cluster, dataset: bytes
) -> None:
    api = cluster.api
    assert api.client.get("/readyz").json()["checks"]["storage"] == "ok"
    ids = [api.submit(dataset, {**TINY, "seed": i})["id"] for i in range(6)]
    for job_id in ids:
        api.wait_job(job_id, succeeded, "success", JOBS_S)

    rows = cluster.rows(*ids)
    assert {r["gpu"] for r in rows.values()} == {None, "0"}, f"both hosts ran jobs: {rows}"
    assert all(r["worker_id"] and r["attempts"] == 1 for r in rows.values()), rows
    assert cluster.files_on_disk() == {n: [] for n in ("api", "api-proxied", "host-a", "host-b")}

    keys = set(cluster.s3.object_keys())
    for job_id in ids:
        stored = cluster.artifacts(job_id)
        assert set(stored) == OUTPUTS
        assert {key for key, _, _ in stored.values()} == {
            f"balancer/jobs/{job_id}/{name}" for name in OUTPUTS
        }
        dataset_id = api.job(job_id)["dataset_id"]
        assert {key for key, _, _ in stored.values()} | {
            f"balancer/datasets/{dataset_id}.zip"
        } <= keys
        for route, name in ROUTES.items():
            _, size, sha256 = stored[name]
            redirect = api.client.get(f"/v1/jobs/{job_id}/{route}")
            assert redirect.status_code == 307, redirect.text
            body = httpx.get(redirect.headers["location"], timeout=30)  # no API key sent
            assert body.status_code == 200
            proxied = cluster.proxied.client.get(f"/v1/jobs/{job_id}/{route}")
            assert proxied.status_code == 200, proxied.text
            for content in (body.content, proxied.content):
                assert (len(content), hashlib.sha256(content).hexdigest()) == (size, sha256)
        assert api.client.get(f"/v1/jobs/{job_id}/report").status_code == 200


def test_the_store_going_away_mid_job_fails_the_job_with_a_readable_error(
    cluster: Cluster, dataset: bytes
) -> None:
    api = cluster.api
    job_id = api.submit(dataset, TRAINING)["id"]
    api.wait_job(job_id, lambda j: j["stage"] == "training_gan", "GAN training", RECOVERY_S)
    cluster.s3.stop()
    try:
        ready = api.client.get("/readyz")
        assert ready.status_code == 503 and "unreachable" in ready.json()["checks"]["storage"]
        done = api.wait_job(job_id, lambda j: j["status"] != "running", "the job to end", 120)
        assert done["status"] == "failed", done
        assert "object store" in done["error"] and "unreachable" in done["error"], done
        print(f"store gone: {done['error']}")
    finally:
        cluster.s3.start()
    assert api.client.get("/readyz").status_code == 200
    assert cluster.files_on_disk()["host-a"] == cluster.files_on_disk()["host-b"] == []


def test_a_host_killed_mid_gan_loses_no_job(cluster: Cluster, dataset: bytes) -> None:
    api = cluster.api
    job_id = api.submit(dataset, TRAINING)["id"]
    first = api.wait_job(job_id, lambda j: j["stage"] == "training_gan", "GAN training", RECOVERY_S)
    assert first["attempts"] == 1
    victim = "host-b" if cluster.rows(job_id)[job_id]["gpu"] == "0" else "host-a"
    os.killpg(cluster.hosts[victim].pid, signal.SIGKILL)  # the host and its pool children
    cluster.hosts[victim].wait(30)

    api.wait_job(job_id, succeeded, "the other host to finish the job", RECOVERY_S)
    row = cluster.rows(job_id)[job_id]
    assert row["attempts"] == 2 and row["gpu"] == (None if victim == "host-b" else "0"), row
    assert set(cluster.artifacts(job_id)) == OUTPUTS
    survivor = "host-a" if victim == "host-b" else "host-b"
    assert cluster.files_on_disk()[survivor] == []
    with cluster.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, count(*) FROM jobs GROUP BY status"))
        statuses = {status: count for status, count in rows}
    assert statuses == {"succeeded": 7, "failed": 1}, "no job lost, none left running"


def test_deleted_jobs_and_orphans_leave_nothing_in_the_store(cluster: Cluster) -> None:
    api = cluster.api
    jobs = api.client.get("/v1/jobs", params={"limit": 100}).json()["items"]
    for job in jobs:
        assert api.client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    datasets = api.client.get("/v1/datasets", params={"limit": 100}).json()["items"]
    for dataset in datasets:
        if not dataset["builtin"]:  # jobs' datasets stay until deleted themselves
            assert api.client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
    orphan = f"balancer/uploads/{uuid.uuid4()}.zip"  # an API died before creating its job
    cluster.s3.client().put_object(Bucket=BUCKET, Key=orphan, Body=b"zip")
    assert orphan in cluster.s3.object_keys()
    empty = lambda: cluster.s3.object_keys() == []  # noqa: E731
    wait_until(empty, "the store to be empty", 60, cluster.api.log_tail)
