"""`balancer serve` stopped with SIGTERM (systemd, docker stop, kill) stops its worker too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import ROOT, START_TIMEOUT_S, _free_port, python_path
from .test_auth import _answers

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def test_sigterm_stops_serve_and_its_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env |= {"BALANCER_DATA_DIR": str(tmp_path), "PYTHONPATH": python_path()}
    port = _free_port()
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(f"http://127.0.0.1:{port}") or not workers:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            workers = _children(proc.pid)
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert not any(_alive(w) for w in workers), f"worker left running: {workers}"
    finally:
        for pid in [proc.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
