"""`balancer worker --gpus`: which GPUs, and one real Celery process per GPU with its own
CUDA_VISIBLE_DEVICES, stopped together. (That such a worker runs jobs and records its GPU
is tested in test_multi_host.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cli.workers import parse_gpus, worker_commands
from tests.reliability.stack import ROOT, python_path, wait_until

pytestmark = pytest.mark.timeout(180)


def test_gpu_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_gpus("0,1") == ["0", "1"]
    assert parse_gpus(" 3 ") == ["3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert parse_gpus("all") == ["2", "3"], "all = the GPUs this process may see"
    for bad in ("0,,1", "0,0", ""):
        with pytest.raises(SystemExit, match="--gpus"):
            parse_gpus(bad)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(SystemExit, match="no GPU is visible"):
        parse_gpus("all")


def test_each_gpu_gets_a_worker_of_its_own() -> None:
    commands = worker_commands(["0", "1"], "gpu,cpu", "info")
    assert [gpu for _, gpu in commands] == ["0", "1"]
    for argv, gpu in commands:
        assert {"--queues=gpu,cpu", "--pool=threads", f"--hostname=gpu{gpu}@%h"} <= set(argv)


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(p) for p in found]


def visible_devices(pid: int) -> str | None:
    for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if item.startswith(b"CUDA_VISIBLE_DEVICES="):
            return item.split(b"=", 1)[1].decode()
    return None


@pytest.mark.slow
def test_one_process_per_gpu_started_and_stopped_together(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "CUDA_"))}
    env |= {"BALANCER_DATA_DIR": str(tmp_path), "BALANCER_WARM_UP": "false"}
    env |= {"PYTHONPATH": python_path()}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "worker", "--gpus", "0,1"], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        ready = lambda: log.read_text().count(" ready.") == 2  # noqa: E731
        wait_until(ready, "two workers to start", 120, lambda: log.read_text()[-3000:])
        workers = children(proc.pid)
        assert sorted(visible_devices(p) for p in workers) == ["0", "1"]
        text = log.read_text()
        assert "gpu0@" in text and "gpu1@" in text, "each has a node name of its own"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists(), "every worker stopped with it"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
