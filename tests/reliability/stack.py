"""A real stack for fault injection: the API (uvicorn) and Celery workers as subprocesses that
a test can start, kill and start again, plus helpers to poll with deadlines.

Leases are short here (5 s, renewed every second, swept every second), so a killed worker's
job comes back within seconds instead of a minute.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.service_commands import stop_process
from cli.workers import worker_argv

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90
FINISHED = {"succeeded", "failed", "canceled"}
FAST_RECOVERY = {
    "BALANCER_LEASE_S": "5",
    "BALANCER_HEARTBEAT_INTERVAL_S": "1",
    "BALANCER_SWEEP_INTERVAL_S": "1",
    "BALANCER_RESEND_QUEUED_AFTER_S": "3",
    "BALANCER_PROGRESS_INTERVAL_S": "0.2",
    "BALANCER_MAX_ATTEMPTS": "2",
    "BALANCER_OWNER_MAX_ACTIVE_JOBS": "1000",
}
# The smallest real job: a tiny GAN and one classifier epoch.
_SMALL_GAN = {
    "preset": "quick",
    "gan_iterations": 1,
    "epochs": 1,
    "seeds": 1,
    "gan_width": 8,
    "evaluation": "holdout",  # one run a job (cross-validation: tests/pipeline/test_crossval.py)
}
# ...and the smallest transfer fit (the quick preset's took 16 s of a 20 s job on 2 cores).
TINY = {**_SMALL_GAN, "transfer_pairs": 16, "transfer_steps": 5}
# GAN training that reports every iteration, long enough to be caught in the act. It keeps the
# quick preset's transfer fit (256 pairs, 100 steps: seconds): with the small one, the jobs of
# test_multi_host ended before the test saw them in "training_gan".
TRAINING = {**_SMALL_GAN, "gan_iterations": 30, "gan_batch": 8, "progress_every": 1}
# Far more GAN work than any test waits for. "per-class": a DCGAN per minority class (and per
# proxy world), which runs gan_iterations, with no other generator to fit first.
ENDLESS = {**TRAINING, "gan_iterations": 500_000, "generator": "per-class"}


def python_path() -> str:
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], Any],
    what: str,
    timeout_s: float,
    details: Callable[[], str] = lambda: "",
) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}\n{details()}")
        time.sleep(0.2)


class Stack:
    """API and workers on one data folder; SQLite and the embedded broker unless told."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
        self.env = base | {
            # One PyTorch thread per process: the API, workers and tests share 2 cores.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "BALANCER_DATA_DIR": str(data_dir),
            "BALANCER_DATABASE_URL": "",
            "BALANCER_BROKER_URL": "",
            "BALANCER_QUEUE": "gpu",
            **FAST_RECOVERY,
            **env,
            "PYTHONPATH": python_path(),
        }
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.key = ""
        self.client = httpx.Client(base_url=self.base_url, timeout=30)

    # --- processes --------------------------------------------------------------------------

    def prepare(self) -> Stack:
        """Migrate the database and make an API key with the real CLI."""
        self.cli("db", "upgrade")
        self.key = self.cli("keys", "create", "--name", "reliability").splitlines()[-1]
        self.client.headers["Authorization"] = f"Bearer {self.key}"
        return self

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"balancer {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout.strip()

    def start_api(self) -> None:
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"]
        self.api = self._spawn(cmd + ["--host", "127.0.0.1", "--port", str(self.port)], "api")
        wait_until(self._api_up, "the API to answer /healthz", START_TIMEOUT_S, self.log_tail)

    def start_worker(self, jobs: int = 1, **env: str) -> subprocess.Popen:
        """A worker running `jobs` jobs at once (1: prefork, more: threads; worker/pool.py),
        with `env` on top of the stack's settings."""
        cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app"]
        cmd += worker_argv(self.env["BALANCER_QUEUE"], jobs, "info")
        proc = self._spawn(cmd, f"worker-{len(self.workers) + 1}", env)
        self.workers.append(proc)
        log = self.logs[-1]
        ready = lambda: "ready." in log.read_text()  # noqa: E731
        wait_until(ready, "a worker to start", START_TIMEOUT_S, self.log_tail)
        return proc

    def kill_worker(self, proc: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group: parent and pool children, no cleanup."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def kill_workers(self) -> None:
        """SIGKILL every worker still running (after a test: none may outlive it)."""
        for proc in self.workers:
            if proc.poll() is None:
                self.kill_worker(proc)

    def stop(self) -> None:
        self.client.close()
        for proc in [*self.workers, *([self.api] if self.api else [])]:
            if proc.poll() is None:
                stop_process(proc, grace_s=5)

    def _spawn(
        self, cmd: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        log = self.data_dir / f"{name}.log"
        self.logs.append(log)
        with log.open("w") as out:
            # Own process group: a kill reaches the worker's pool children too.
            return subprocess.Popen(
                cmd, cwd=ROOT, env=self.env | (env or {}), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _api_up(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            pytest.fail(f"the API exited\n{self.log_tail()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        logs = [p for p in self.logs if p.exists()]
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs)

    # --- jobs -------------------------------------------------------------------------------

    def submit(self, data: bytes, config: dict[str, Any]) -> dict[str, Any]:
        files = {"dataset": ("data.zip", data, "application/zip")}
        resp = self.client.post("/v1/jobs", files=files, data={"config": json.dumps(config)})
        assert resp.status_code == 202, resp.text
        return resp.json()

    def job(self, job_id: str) -> dict[str, Any]:
        resp = self.client.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    def wait_job(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], what: str, timeout_s: float
    ) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def check() -> dict[str, Any] | None:
            last.update(self.job(job_id))
            return dict(last) if done(last) else None

        details = lambda: f"last seen: {last}\n{self.log_tail()}"  # noqa: E731
        return wait_until(check, f"job {job_id}: {what}", timeout_s, details)

    def job_folder(self, job_id: str) -> list[str]:
        """The names in the job's folder on disk: out/ once it succeeded, else nothing (its
        dataset is stored apart, in datasets/)."""
        folder = self.data_dir / "jobs" / job_id
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def in_training(attempt: int) -> Callable[[dict[str, Any]], bool]:
    """A `wait_job` condition: attempt `attempt` is training the GAN."""
    return lambda j: j["stage"] == "training_gan" and j["attempts"] == attempt
