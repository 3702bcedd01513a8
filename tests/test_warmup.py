"""Worker warm-up: a no-op on a CPU, a tiny real job on CUDA, never blocking a job forever."""

from __future__ import annotations

import time

import pytest
import torch

from pipeline.warmup import warm_up
from worker import warmup as worker_warmup


def test_warm_up_does_nothing_on_a_cpu():
    start = time.perf_counter()
    assert warm_up("cpu") == 0.0
    assert time.perf_counter() - start < 1.0


def test_worker_warm_up_thread_releases_waiting_jobs(monkeypatch):
    calls = []
    monkeypatch.setattr("pipeline.warmup.warm_up", lambda **_: calls.append(1) or 0.0)
    worker_warmup.start_warm_up()
    worker_warmup.wait_for_warm_up(timeout_s=30)
    assert calls == [1] and worker_warmup._done.is_set()


def test_a_failing_warm_up_still_releases_jobs(monkeypatch):
    def boom(**_: object) -> float:
        raise RuntimeError("no GPU after all")

    monkeypatch.setattr("pipeline.warmup.warm_up", boom)
    worker_warmup.start_warm_up()
    worker_warmup.wait_for_warm_up(timeout_s=30)
    assert worker_warmup._done.is_set()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_warm_up_runs_a_job_on_cuda_and_makes_a_lane_per_slot():
    from pipeline import engine

    assert warm_up(jobs=3) > 0.0
    key = engine._device_key(torch.device("cuda"))
    assert len(engine._free_lanes[key]) >= 3
