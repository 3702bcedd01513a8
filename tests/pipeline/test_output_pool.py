"""Several jobs in one process: output files written by an OutputPool, seeded initial weights
that a concurrent job cannot disturb, stream lanes that are a no-op off CUDA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import torch

import pipeline.outputs as outputs
from bench.output_time import job_outputs
from pipeline.config import RunConfig
from pipeline.engine import job_lane, training_rng
from pipeline.gan import Generator, init_dcgan_
from pipeline.output_pool import OutputPool
from pipeline.seeding import seeded_init
from tests.pipeline.zips import class_folder_files, write_zip

TINY = RunConfig(
    preset="quick", gan_iterations=10, epochs=1, device="cpu", transfer_steps=5, transfer_pairs=16
)


@pytest.fixture(scope="module")
def pool():
    writers = OutputPool(2)
    yield writers
    writers.close()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny job's write_outputs arguments after out_dir, and its own output folder."""
    tmp = tmp_path_factory.mktemp("job")
    data = write_zip(tmp / "d.zip", class_folder_files({"a": 24, "b": 6}, size=(16, 16)))
    torch.set_num_threads(1)
    return job_outputs(data, tmp, TINY), tmp / "job"


def test_pool_writes_the_same_files_as_the_job_thread(pool, job, tmp_path):
    rest, inline = job
    report = rest[0]
    added = pool.write(tmp_path / "out", *rest)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(outputs.OUTPUT_FILES)
    assert set(added) == {"packaging_seconds", "total_seconds"}
    assert report["timings"]["total_seconds"] == added["total_seconds"]  # the caller's copy too
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["timings"] == report["timings"]
    html = (tmp_path / "out" / "report.html").read_text()
    # every chart drawn in the pool made it into the page, as many as the job's own page has
    charts = html.count("data:image/png;base64,")
    assert charts == (inline / "report.html").read_text().count("data:image/png;base64,") > 4


def test_a_dead_writer_costs_its_job_nothing_and_is_replaced(pool, job, tmp_path):
    rest, _ = job
    pool.warm_up()
    before = pool._pool
    old_writers = list(before._processes.values())
    assert len(old_writers) == 2
    # One writer busy with a result bigger than a pipe's buffer (as a chart is) while the other
    # dies (as under an OOM kill): once the pool is broken nobody reads that result, so the
    # busy writer blocks on sending it.
    before.submit(subprocess.check_output, ["sh", "-c", "sleep 1; head -c 1000000 /dev/zero"])
    time.sleep(0.3)
    before.submit(os._exit, 1)
    for i in range(3):  # the death is noticed by the next calls; each is written once more
        pool.write(tmp_path / f"job{i}", *rest)
        assert (tmp_path / f"job{i}" / "report.json").exists()
    assert pool._pool is not before, "new writers were started"
    # The broken pool's other writer ignores SIGTERM; left alive, the pool's manager thread
    # (and so the worker's exit) would wait for it for ever.
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in old_writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in old_writers), "the broken pool's writers were ended"


def test_writers_outlive_a_ctrl_c_to_the_process_group(pool, job, tmp_path):
    """A warm shutdown (SIGINT / SIGTERM to the group) lets running jobs write their files."""
    rest, _ = job
    pool.warm_up()
    before = pool._pool
    for pid in list(before._processes):
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.5)
    pool.write(tmp_path / "after", *rest)
    assert (tmp_path / "after" / "report.json").exists()
    assert pool._pool is before, "the same writers: none died"


def test_seeded_init_is_not_disturbed_by_a_concurrent_build():
    def build() -> torch.Tensor:
        with seeded_init(7):
            g = Generator(1, 16, 1, 28, width=8)
            init_dcgan_(g)
        return torch.cat([p.detach().flatten() for p in g.parameters()])

    expected = build()
    results: list[torch.Tensor] = []
    stop = threading.Event()

    def noise() -> None:  # another job drawing from the CPU generator all the while
        while not stop.is_set():
            with seeded_init(1):
                torch.randn(1000)

    other = threading.Thread(target=noise)
    other.start()
    try:
        results = [build() for _ in range(20)]
    finally:
        stop.set()
        other.join()
    assert all(torch.equal(r, expected) for r in results)


def test_job_lane_and_training_rng_are_inert_off_cuda():
    with job_lane(torch.device("cpu")):
        assert training_rng(torch.device("cpu")) is None
    assert training_rng(torch.device("cpu")) is None


def test_close_ends_a_pool_broken_since_the_last_job():
    """A writer that died after the last job must not make the worker's exit wait for ever."""
    pool = OutputPool(2)
    pool.warm_up()
    writers = list(pool._pool._processes.values())
    pool._pool.submit(subprocess.check_output, ["sh", "-c", "sleep 1; head -c 1000000 /dev/zero"])
    time.sleep(0.3)
    pool._pool.submit(os._exit, 1)
    deadline = time.monotonic() + 10
    while not getattr(pool._pool, "_broken", False) and time.monotonic() < deadline:
        time.sleep(0.05)
    closing = threading.Thread(target=pool.close, daemon=True)
    closing.start()
    closing.join(timeout=15)
    assert not closing.is_alive(), "close() returned"
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in writers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in writers)
