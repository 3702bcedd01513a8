"""Real components for the service tests: the API (uvicorn) and a Celery worker run as
subprocesses, on two backends:

- embedded: SQLite + kombu's SQLAlchemy transport on SQLite, in a temporary folder;
- postgres_redis (marked `service`): a fresh database created for this test session on
  127.0.0.1:5432 and dropped at the end, and Redis with a queue name of its own.

PostgreSQL or Redis being down fails these tests with a message; it never skips them.

Each service gets an API key made with the real `balancer keys create`; `service.client` sends
it, `service.client_for(key)` makes a client for another key (None: no key at all).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.service_commands import stop_process
from cli.workers import worker_argv

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_DSN = os.environ.get("BALANCER_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432")
# A Redis database number of its own, and a unique queue name per test session on top.
REDIS_URL = os.environ.get("BALANCER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
UPLOAD_LIMIT = 5 * 1024**2
START_TIMEOUT_S = 60
# Per-owner limits of the services under test; the owner SMALL_OWNER may upload less.
ACTIVE_JOBS_LIMIT = 3
RETRY_AFTER_S = 45
SMALL_OWNER, SMALL_OWNER_UPLOAD_LIMIT = "small-uploads", 100_000
TEST_OWNER = "tests"
# How long the test services' API trusts a key it verified (BALANCER_API_KEY_CACHE_S): short,
# so that the revocation test waits little.
KEY_CACHE_S = 1.0
# One PyTorch thread in the API and worker processes (unless the caller set OMP_NUM_THREADS):
# on the 2-core test machine they share the cores with the test process, and a small job took
# 5.2-5.6 s with one thread against 7.8-10.9 s with two (docs/testing.md).
ONE_THREAD = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@dataclass
class Service:
    backend: str
    client: httpx.Client
    data_dir: Path
    logs: list[Path]
    procs: list[subprocess.Popen]
    env: dict[str, str]
    base_url: str
    key: str

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-chars:]}" for p in self.logs)

    def client_for(self, key: str | None, header: str = "bearer") -> httpx.Client:
        """A client sending `key` as `Authorization: Bearer` or (header="x-api-key") as
        X-API-Key; no key at all for None. Close it after use."""
        headers = {} if key is None else auth_header(key, header)
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def balancer(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the real `balancer` CLI against this service's database."""
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def create_key(self, name: str, owner: str | None = None) -> str:
        """A new key from `balancer keys create`: the last line of its output."""
        done = self.balancer("keys", "create", "--name", name, *(["--owner", owner] * bool(owner)))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]


def auth_header(key: str, header: str = "bearer") -> dict[str, str]:
    return {"X-API-Key": key} if header == "x-api-key" else {"Authorization": f"Bearer {key}"}


def _pg_admin():  # psycopg and redis are imported only where they are used
    import psycopg

    try:
        return psycopg.connect(f"{PG_ADMIN_DSN}/postgres", autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_DSN} ({exc}). These tests need it "
            "running (trust auth, user postgres); .ci/run starts it.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[str], str]]:
    """Factory: a fresh, uniquely named database per call, all dropped at session end."""
    from psycopg import sql

    created: list[str] = []

    def make(label: str) -> str:
        name = f"balancer_test_{label}_{os.getpid()}_{secrets.token_hex(3)}"
        with _pg_admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return f"postgresql+psycopg://{PG_ADMIN_DSN.split('://', 1)[1]}/{name}"

    yield make
    if created:
        with _pg_admin() as conn:
            for name in created:
                drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(drop.format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def redis_queue() -> Iterator[str]:
    """A queue name no one else uses; its keys are deleted at session end."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({exc}). These tests need it running; "
            ".ci/run starts it.",
            pytrace=False,
        )
    queue = f"gpu-test-{os.getpid()}-{secrets.token_hex(3)}"
    yield queue
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)
    client.close()


BACKENDS = [
    "embedded",
    pytest.param("postgres_redis", marks=[pytest.mark.service, pytest.mark.slow]),
]


@pytest.fixture(scope="session", params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Service]:  # noqa: ANN001
    data_dir = tmp_path_factory.mktemp(f"service-{request.param}")
    with running_service(request.param, service_env(request, data_dir), data_dir) as svc:
        yield svc


def service_env(request: pytest.FixtureRequest, data_dir: Path) -> dict[str, str]:
    """The BALANCER_* settings of a test service on backend `request.param`."""
    env = {
        "BALANCER_DATA_DIR": str(data_dir),
        "BALANCER_DATABASE_URL": "",  # "" = the embedded default, not a developer's setting
        "BALANCER_BROKER_URL": "",
        "BALANCER_QUEUE": "gpu",
        "BALANCER_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
        "BALANCER_PROGRESS_INTERVAL_S": "0.2",
        "BALANCER_OWNER_MAX_ACTIVE_JOBS": str(ACTIVE_JOBS_LIMIT),
        "BALANCER_OWNER_RETRY_AFTER_S": str(RETRY_AFTER_S),
        "BALANCER_API_KEY_CACHE_S": str(KEY_CACHE_S),
        "BALANCER_OWNER_LIMITS": json.dumps(
            {SMALL_OWNER: {"max_upload_bytes": SMALL_OWNER_UPLOAD_LIMIT}}
        ),
    }
    if request.param == "postgres_redis":
        env["BALANCER_DATABASE_URL"] = request.getfixturevalue("pg_database")("service")
        env["BALANCER_BROKER_URL"] = REDIS_URL
        env["BALANCER_QUEUE"] = request.getfixturevalue("redis_queue")
    return env


@contextmanager
def running_service(
    backend: str, env: dict[str, str], data_dir: Path, worker_options: tuple[str, ...] = ()
) -> Iterator[Service]:
    """With `worker_options`, the worker is `balancer worker OPTIONS` (same Celery argv)."""
    # Only our BALANCER_* variables: a developer's own must never reach the test processes.
    base = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    proc_env = base | ONE_THREAD | env | {"PYTHONPATH": python_path()}
    _run([sys.executable, "-c", "from cli.service_commands import db_upgrade_command as up; "
          "import argparse; up(argparse.Namespace(revision='head'))"], proc_env)  # fmt: skip
    created = _run([sys.executable, "-m", "cli.main", "keys", "create", "--name", "service tests",
                    "--owner", TEST_OWNER], proc_env)  # fmt: skip
    key = created.strip().splitlines()[-1]
    worker_log, api_log = data_dir / "worker.log", data_dir / "api.log"
    port = _free_port()
    worker_cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
    worker_cmd += worker_argv(env["BALANCER_QUEUE"], 1, "info")
    if worker_options:
        worker_cmd = [sys.executable, "-m", "cli.main", "worker", "--queues"]
        worker_cmd += [env["BALANCER_QUEUE"], *worker_options]
    api_cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
    api_cmd += ["--host", "127.0.0.1", "--port", str(port)]
    procs = [_spawn(worker_cmd, proc_env, worker_log), _spawn(api_cmd, proc_env, api_log)]
    base_url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base_url, timeout=30, headers=auth_header(key))
    svc = Service(backend, client, data_dir, [worker_log, api_log], procs, proc_env, base_url, key)
    try:
        _wait(lambda: "ready." in worker_log.read_text(), "the worker to start", svc)
        _wait(lambda: _ready(client), "the API to answer /readyz", svc)
        yield svc
    finally:
        client.close()
        for proc in reversed(procs):
            stop_process(proc, grace_s=5)


def python_path() -> str:
    """The repository first, then whatever PYTHONPATH the tests were given."""
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _run(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _wait(check: Callable[[], bool], what: str, svc: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not check():
        if any(p.poll() is not None for p in svc.procs):
            pytest.fail(f"a service process exited waiting for {what}\n{svc.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{svc.log_tail()}", pytrace=False)
        time.sleep(0.2)


# --- shared by the service test modules ------------------------------------------------------

# evaluation holdout: these tests are of the service; tests/pipeline/test_crossval.py covers
# the cross-validation that "auto" would choose for these small flat zips (5 runs a job).
# A narrow GAN and the smallest transfer fit the config admits: the quick preset's transfer
# fit alone took 16 s of a 20 s job here.
QUICK = {"preset": "quick", "gan_iterations": 20, "epochs": 1, "seeds": 1, "evaluation": "holdout"}
QUICK |= {"gan_width": 8, "transfer_pairs": 16, "transfer_steps": 5}
# Far more GAN work than the tests wait for: the job is surely still running when cancelled.
# Small GAN batches and frequent progress callbacks: the worker gets to check for a cancel
# often, even on a loaded 2-core CI machine.
LONG = {**QUICK, "gan_iterations": 200_000, "gan_batch": 8, "progress_every": 2}
CANCEL_WITHIN_S = 15
FINISHED = {"succeeded", "failed", "canceled"}
JOB_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def dataset_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from .datasets import make_zip

    return make_zip(tmp_path_factory.mktemp("data") / "data.zip").read_bytes()


def assert_problem(resp: httpx.Response, status: int) -> dict:
    """An RFC 9457 application/problem+json answer with this status."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body
