"""How a worker runs several jobs at once (worker/pool.py, cli/service_commands.py), how it
gets ready for them (worker/tasks.py), and the time limit the threads pool enforces itself
(worker/progress.py). No services, no torch: these run in well under a second."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery.concurrency import get_implementation
from celery.exceptions import SoftTimeLimitExceeded

from cli.workers import worker_argv
from jobs.state import LeaseLost
from worker import pool, progress, tasks
from worker.pool import DEFAULT_GPU_JOBS, jobs_at_once, pool_argv
from worker.progress import JobCanceled, ProgressWriter

# --- jobs at once and the pool ---------------------------------------------------------------


@pytest.mark.parametrize("gpu", [True, False])
def test_configured_gpu_jobs_win_with_or_without_a_gpu(
    monkeypatch: pytest.MonkeyPatch, gpu: bool
) -> None:
    monkeypatch.setattr(pool, "gpu_visible", lambda: gpu)
    assert jobs_at_once(1) == 1
    assert jobs_at_once(3) == 3


def test_unset_gpu_jobs_is_one_job_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "gpu_visible", lambda: False)
    assert jobs_at_once(0) == 1


def test_unset_gpu_jobs_is_the_default_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "gpu_visible", lambda: True)
    assert jobs_at_once(0) == DEFAULT_GPU_JOBS > 1


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_no_gpu_is_visible_when_cuda_visible_devices_hides_them(
    monkeypatch: pytest.MonkeyPatch, hidden: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert pool.gpu_visible() is False


def test_pool_argv_threads_for_several_jobs_prefork_for_one() -> None:
    assert pool_argv(1) == ["--pool=prefork", "--concurrency=1"]
    assert pool_argv(2) == ["--pool=threads", "--concurrency=2"]
    assert pool_argv(8) == ["--pool=threads", "--concurrency=8"]


def test_worker_argv_one_job_is_prefork_four_are_threads() -> None:
    common = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    assert worker_argv("gpu", 1, "info") == [
        "worker", "--queues=gpu", "--loglevel=info", "--pool=prefork", "--concurrency=1", *common
    ]  # fmt: skip
    assert worker_argv("gpu,cpu", 4, "debug") == [
        "worker", "--queues=gpu,cpu", "--loglevel=debug", "--pool=threads", "--concurrency=4",
        *common,
    ]  # fmt: skip


# --- the time limit of a job (ProgressWriter) --------------------------------------------------


class FakeKeeper:
    """LeaseKeeper's face to ProgressWriter: beats are recorded, the stop reason is set."""

    def __init__(self) -> None:
        self.beats: list[tuple[str, float]] = []
        self.reason: str | None = None

    def beat(self, stage: str, fraction: float) -> None:
        self.beats.append((stage, fraction))

    def stop_reason(self) -> str | None:
        return self.reason


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """worker.progress's time.monotonic, moved by hand: `clock.now += 5`."""
    fake = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: fake.now))
    return fake


def test_progress_passes_until_the_time_limit_then_stops_the_job(clock: SimpleNamespace) -> None:
    keeper = FakeKeeper()
    writer = ProgressWriter(keeper, interval_s=0.0, time_limit_s=10)
    writer("training_gan", 0.1)
    clock.now += 9.9
    writer("training_gan", 0.5)
    writer.check()
    assert keeper.beats == [("training_gan", 0.1), ("training_gan", 0.5)]

    clock.now += 0.2  # 10.1 s after the writer was made
    with pytest.raises(SoftTimeLimitExceeded):
        writer("training_gan", 0.6)
    with pytest.raises(SoftTimeLimitExceeded):
        writer.check()  # before publishing, too
    assert len(keeper.beats) == 2, "nothing is written for a job past its limit"


def test_a_throttled_progress_call_still_checks_the_time_limit(clock: SimpleNamespace) -> None:
    """The callback comes every few iterations and mostly writes nothing (interval_s); the
    limit must stop the job on any of them, not only on the ones that write."""
    keeper = FakeKeeper()
    writer = ProgressWriter(keeper, interval_s=3600.0, time_limit_s=10)
    writer("training_gan", 0.1)
    clock.now += 11
    with pytest.raises(SoftTimeLimitExceeded):
        writer("training_gan", 0.2)
    assert keeper.beats == [("training_gan", 0.1)]


def test_no_time_limit_never_stops_the_job(clock: SimpleNamespace) -> None:
    writer = ProgressWriter(FakeKeeper(), interval_s=0.0)
    clock.now += 10 * 365 * 24 * 3600
    writer("training_gan", 0.5)
    writer.check()


def test_the_limit_counts_from_the_writers_start(clock: SimpleNamespace) -> None:
    clock.now += 500  # the worker's uptime before the job does not count
    writer = ProgressWriter(FakeKeeper(), interval_s=0.0, time_limit_s=10)
    clock.now += 5
    writer("training_gan", 0.5)


@pytest.mark.parametrize(("reason", "error"), [("cancel", JobCanceled), ("lease-lost", LeaseLost)])
def test_within_the_limit_cancel_and_lease_loss_still_stop_the_job(
    clock: SimpleNamespace, reason: str, error: type[Exception]
) -> None:
    keeper = FakeKeeper()
    writer = ProgressWriter(keeper, interval_s=0.0, time_limit_s=10)
    keeper.reason = reason
    with pytest.raises(error):
        writer("training_gan", 0.5)


# --- getting a worker process ready for its jobs --------------------------------------------


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `jobs` of each _start_job_process call; nothing is started for real."""
    calls: list[int] = []
    monkeypatch.setattr(tasks, "_start_job_process", lambda jobs: calls.append(jobs))
    return calls


@pytest.mark.parametrize(
    "pool_cls",
    # What a test or a config may hold, and what Celery's CLI hands over at worker_init.
    ["threads", get_implementation("threads")],
    ids=["name", "class"],
)
def test_a_threads_worker_gets_ready_for_its_concurrency(
    started: list[int], pool_cls: object
) -> None:
    tasks._warm_up_thread_worker(sender=SimpleNamespace(pool_cls=pool_cls, concurrency=4))
    assert started == [4]


@pytest.mark.parametrize(
    "pool_cls", ["prefork", get_implementation("prefork")], ids=["name", "class"]
)
def test_a_prefork_worker_leaves_it_to_its_children(started: list[int], pool_cls: object) -> None:
    tasks._warm_up_thread_worker(sender=SimpleNamespace(pool_cls=pool_cls, concurrency=4))
    assert started == []


def test_a_prefork_child_gets_ready_for_one_job(started: list[int]) -> None:
    tasks._warm_up_task_process()
    assert started == [1]
