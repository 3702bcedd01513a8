"""Throwaway PostgreSQL and Redis servers that a test may stop, kill and restart, on ports of
their own. The machine's shared servers (5432, 6379) are never touched.

A missing binary fails the test with a message; it never skips it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from .stack import free_port, wait_until


def _require(path: str | None, what: str) -> str:
    if not path or not os.access(path, os.X_OK):
        pytest.fail(f"{what} is needed for this test and was not found", pytrace=False)
    return path


class ThrowawayPostgres:
    """A cluster in a temporary folder, run as the postgres user (initdb refuses root)."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        self.bin = Path(_require(bins[-1] if bins else None, "PostgreSQL's pg_ctl")).parent
        _require(shutil.which("runuser"), "runuser")
        # Not under pytest's tmp folder: that is root-only (0700), the postgres user can't enter.
        self.root = Path(tempfile.mkdtemp(prefix="balancer-pg-", dir="/tmp"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        os.chmod(self.root, 0o755)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Immediate: the server goes away as in a crash, connections are cut."""
        self._as_postgres("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
             "-m", "immediate", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)

    def _as_postgres(self, tool: str, *args: object) -> None:
        cmd = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *map(str, args)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        log = self.log.read_text() if self.log.exists() else ""
        assert done.returncode == 0, f"{tool} failed:\n{done.stdout}\n{done.stderr}\n{log}"


class ThrowawayRedis:
    """redis-server without persistence: a restart loses every message, as on a real host
    whose Redis runs without RDB/AOF."""

    def __init__(self, folder: Path) -> None:
        self.binary = _require(shutil.which("redis-server"), "redis-server")
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", "--dir", str(self.folder)]  # fmt: skip
        log = (self.folder / "redis.log").open("a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._pong, "redis-server to answer", 30)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def client(self):  # noqa: ANN201 (redis.Redis; imported only here)
        import redis

        return redis.Redis(port=self.port, socket_connect_timeout=2)

    def _pong(self) -> bool:
        import redis

        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.RedisError:
            time.sleep(0.1)
            return False
