"""Shared by the benchmarks that start the service: free ports, waiting, child processes in
process groups of their own, GPU memory from nvidia-smi, percentiles, and the embedded-default
stack (SQLite, embedded broker, local files in a temporary folder) with its API and workers.

Child processes run the CLI as `sys.executable -m cli.main ...` from the repository root, so
they work where the service's packages come from PYTHONPATH (the repository root is put in
front of whatever PYTHONPATH already holds) rather than from an installed `balancer` script.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# Variables that say where a stack lives: a benchmark's own stack never inherits them.
STACK_VARIABLES = (
    "BALANCER_DATA_DIR",
    "BALANCER_DATABASE_URL",
    "BALANCER_BROKER_URL",
    "BALANCER_STORAGE_URL",
    "BALANCER_S3_",
    "BALANCER_QUEUE",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(check: Callable[[], T], what: str, timeout_s: float, interval_s: float = 0.5) -> T:
    """Call check until it returns something true and return that; SystemExit on timeout."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval_s)
    return result


def api_ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def child_env(
    extra: dict[str, str], drop: tuple[str, ...] = ("BALANCER_", "AWS_")
) -> dict[str, str]:
    """This process's environment without variables starting with `drop`, the repository root
    in front of PYTHONPATH (kept: the service's packages may come from there), then extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env | extra


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start cmd in the repository root in a session (process group) of its own, so that a
    signal to the group reaches it and its children, and Ctrl-C in the terminal does not."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the process's group, SIGKILL to the group after grace_s; the group is also
    killed when its leader already exited (its children may live on)."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


class GpuMemory:
    """memory.used (MiB) per GPU index from nvidia-smi, sampled every interval_s in a thread
    while the context is open: `baseline` is the first sample (taken on entering), `peak` the
    largest. With one worker per GPU that is the worker's memory plus the driver's own.
    `available` is False (and nothing is sampled) where nvidia-smi is not installed."""

    QUERY = ["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.available = shutil.which("nvidia-smi") is not None
        self.baseline: dict[str, float] = {}
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def __enter__(self) -> GpuMemory:
        if self.available:
            self.baseline = self.sample()
            self.peak = dict(self.baseline)
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    @classmethod
    def sample(cls) -> dict[str, float]:
        """One reading: {index: MiB used}; empty if nvidia-smi fails."""
        try:
            out = subprocess.run(cls.QUERY, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return {}
        used = {}
        for line in out.splitlines():
            parts = [s.strip() for s in line.split(",")]
            if len(parts) == 2 and parts[1].replace(".", "", 1).isdigit():
                used[parts[0]] = float(parts[1])
        return used

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            for index, used in self.sample().items():
                self.peak[index] = max(self.peak.get(index, 0.0), used)

    def of(self, gpus: list[str]) -> dict[str, float] | None:
        """Peak MiB of these GPU indexes; None without nvidia-smi."""
        return {g: self.peak.get(g, 0.0) for g in gpus} if self.available else None


class EmbeddedStack:
    """The service's embedded default in a temporary folder: SQLite and the embedded broker
    (kombu's SQLAlchemy transport) in BALANCER_DATA_DIR, local files. Migrations applied and
    an API key made on creation; start_api / start_worker spawn `balancer api` and `balancer
    worker` as process groups; close() stops them and removes the folder."""

    def __init__(self, env: dict[str, str], keep: bool = False, prefix: str = "bench-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.keep = keep
        self.procs: dict[str, subprocess.Popen] = {}
        inherited = child_env({}, drop=STACK_VARIABLES)
        self.env = inherited | {"BALANCER_DATA_DIR": str(self.root / "data")} | env
        self.url: str | None = None
        try:
            self.cli("db", "upgrade")
            self.key = self.cli("keys", "create", "--name", "bench").strip().splitlines()[-1]
        except BaseException:
            self.close()
            raise

    def cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"balancer {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """`balancer ARGS` as a process group named name (its output in name.log)."""
        cmd = [sys.executable, "-m", "cli.main", *args]
        self.procs[name] = spawn(cmd, self.env | (env or {}), self.root / f"{name}.log")
        return self.procs[name]

    def start_api(self, timeout_s: float = 300) -> httpx.Client:
        """`balancer api` on a free loopback port; returns a client with the key, once ready."""
        port = free_port()
        self.start("api", ["api", "--host", "127.0.0.1", "--port", str(port)])
        self.url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=self.url, timeout=120,
                              headers={"Authorization": f"Bearer {self.key}"})  # fmt: skip
        wait(lambda: api_ready(client) or self.check_alive("api"), "the API", timeout_s)
        return client

    def check_alive(self, name: str) -> bool:
        """False while the process runs; SystemExit with its log's tail once it has exited."""
        proc = self.procs[name]
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited ({proc.returncode}):\n{self.log(name)[-3000:]}")
        return False

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self, grace_s: float = 10.0) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_group(proc, grace_s)
        if self.keep:
            print(f"kept {self.root} (logs, database, job files)", flush=True)
        else:
            shutil.rmtree(self.root, ignore_errors=True)
