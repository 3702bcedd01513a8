"""A packed worker: one process running several jobs at once as threads (BALANCER_GPU_JOBS > 1,
worker/pool.py), on a PostgreSQL and a Redis of this module's own, with the real API and its
sweeper.

- SIGKILL takes the whole packed batch down at once: every job of it comes back and succeeds
  on the next worker, none is lost;
- a cancel stops only its own job; the other job of the batch runs on and succeeds;
- the time limit, which the threads pool cannot enforce with a signal, still stops a job
  (worker/progress.py raises it from the job's progress callback).
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from collections.abc import Iterator
from datetime import datetime

import pytest
from sqlalchemy import Engine, create_engine, select

from jobs.models import Job
from tests.service.datasets import make_zip

from .servers import ThrowawayPostgres, ThrowawayRedis
from .stack import ENDLESS, FINISHED, Stack, in_training, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(420)]

PACKED = 2  # jobs at once on the packed worker
SMALL = {"circle": 12, "square": 6, "stripe": 6}
# GAN training long enough (8-10 s alone on one core here) that two jobs started together are
# surely both in it at one moment, even where one thread starts a few seconds after the other.
PACKED_JOB = {**ENDLESS, "gan_iterations": 1000}
REACH_TRAINING_S = 150  # two jobs at once on a loaded 2-core machine
LEASE_RECOVERY_S = 30  # lease 5 s + sweep 1 s, with room for a loaded machine
JOB_S = 300
CANCEL_WITHIN_S = 15
TIME_LIMIT_S = 10  # the least BALANCER_JOB_TIME_LIMIT_S admits
STOP_WITHIN_S = 15  # after the limit: the next progress callback stops the job


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: ThrowawayPostgres,
    redis_server: ThrowawayRedis,
) -> Iterator[Stack]:
    s = Stack(
        tmp_path_factory.mktemp("packed-worker"),
        BALANCER_DATABASE_URL=postgres.url,
        BALANCER_BROKER_URL=redis_server.url,
    ).prepare()
    try:
        s.start_api()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def jobs_table(postgres: ThrowawayPostgres) -> Iterator[Engine]:
    """The database itself: the API does not show which worker runs a job."""
    engine = create_engine(postgres.url)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test(stack: Stack) -> Iterator[None]:
    yield
    stack.kill_workers()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_zip(tmp_path_factory.mktemp("data") / "small.zip", SMALL).read_bytes()


def worker_ids(engine: Engine, job_ids: list[str]) -> set[str | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(Job.worker_id).where(Job.id.in_(map(uuid.UUID, job_ids))))
        return {worker for (worker,) in rows}


def wait_packed(stack: Stack, engine: Engine, job_ids: list[str], attempt: int) -> str:
    """Wait until every job is in GAN training, all at the same time on one worker; its id."""
    last: dict[str, dict] = {}

    def check() -> str | None:
        last.update({j: stack.job(j) for j in job_ids})
        if ended := [j for j, job in last.items() if job["status"] in FINISHED]:
            pytest.fail(f"{ended} ended before the batch ran at once: {last}\n{stack.log_tail()}")
        if not all(in_training(attempt)(job) for job in last.values()):
            return None
        workers = worker_ids(engine, job_ids)
        return workers.pop() if len(workers) == 1 and None not in workers else None

    what = f"{len(job_ids)} jobs in GAN training at once on one worker"
    details = lambda: f"last seen: {last}\n{stack.log_tail()}"  # noqa: E731
    return wait_until(check, what, REACH_TRAINING_S, details)


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def assert_succeeded_with_outputs(stack: Stack, job: dict, attempts: int) -> None:
    """Succeeded on attempt `attempts`, with its whole output downloadable."""
    assert job["status"] == "succeeded", job
    assert job["attempts"] == attempts and job["error"] is None, job
    report = stack.client.get(f"/v1/jobs/{job['id']}/report")
    assert report.status_code == 200, report.text
    assert {c["name"] for c in report.json()["classes"]} == set(SMALL), report.text
    resp = stack.client.get(f"/v1/jobs/{job['id']}/balanced-dataset")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        images = [n for n in zf.namelist() if n.endswith(".png")]
    assert len(images) >= sum(SMALL.values()), "every uploaded image is in the balanced set"
    assert stack.job_folder(job["id"]) == ["out"], "no attempt folder is left"


def test_killed_packed_worker_every_job_of_the_batch_is_retried_and_succeeds(
    stack: Stack, jobs_table: Engine, dataset: bytes
) -> None:
    worker = stack.start_worker(jobs=PACKED)
    job_ids = [stack.submit(dataset, PACKED_JOB)["id"] for _ in range(PACKED)]
    packed_on = wait_packed(stack, jobs_table, job_ids, attempt=1)
    stack.kill_worker(worker)
    killed = time.monotonic()

    # Both leases lapse together; the sweeper puts each job back in the queue.
    for job_id in job_ids:
        back = stack.wait_job(
            job_id, lambda j: j["status"] != "running", "re-queue", LEASE_RECOVERY_S
        )
        assert (back["status"], back["attempts"]) == ("queued", 1), back
    requeued = time.monotonic() - killed

    stack.start_worker(jobs=PACKED)
    done = [
        stack.wait_job(job_id, lambda j: j["status"] in FINISHED, "the retry", JOB_S)
        for job_id in job_ids
    ]
    print(f"fault: {PACKED} jobs re-queued {requeued:.1f} s after the kill, all ended after "
          f"{time.monotonic() - killed:.1f} s")  # fmt: skip
    for job in done:
        assert_succeeded_with_outputs(stack, job, attempts=2)
    retried_on = worker_ids(jobs_table, job_ids)
    assert len(retried_on) == 1 and packed_on not in retried_on, (packed_on, retried_on)


def test_cancel_stops_only_its_job_in_a_packed_batch(
    stack: Stack, jobs_table: Engine, dataset: bytes
) -> None:
    stack.start_worker(jobs=PACKED)
    endless = stack.submit(dataset, ENDLESS)["id"]
    other = stack.submit(dataset, PACKED_JOB)["id"]
    wait_packed(stack, jobs_table, [endless, other], attempt=1)

    asked = time.monotonic()
    assert stack.client.delete(f"/v1/jobs/{endless}").status_code == 202
    canceled = stack.wait_job(
        endless, lambda j: j["status"] in FINISHED, "the cancel", CANCEL_WITHIN_S
    )
    took = time.monotonic() - asked
    assert canceled["status"] == "canceled", canceled
    assert canceled["error"] is None and canceled["finished_at"]
    assert stack.job_folder(endless) == [], "no partial outputs are left"
    assert stack.job(other)["status"] in {"running", "succeeded"}, "the other job runs on"

    done = stack.wait_job(other, lambda j: j["status"] in FINISHED, "the other job", JOB_S)
    print(f"fault: canceled {took:.1f} s after the request; the other job ran on")
    assert_succeeded_with_outputs(stack, done, attempts=1)


def test_a_job_past_its_time_limit_on_a_threads_worker_fails(stack: Stack, dataset: bytes) -> None:
    worker = stack.start_worker(jobs=PACKED, BALANCER_JOB_TIME_LIMIT_S=str(TIME_LIMIT_S))
    job_id = stack.submit(dataset, ENDLESS)["id"]
    stack.wait_job(job_id, in_training(1), "GAN training", REACH_TRAINING_S)

    done = stack.wait_job(
        job_id, lambda j: j["status"] in FINISHED, "the time limit", TIME_LIMIT_S + STOP_WITHIN_S
    )
    ran = (parse_time(done["finished_at"]) - parse_time(done["started_at"])).total_seconds()
    print(f"fault: stopped after {ran:.1f} s, limit {TIME_LIMIT_S} s")
    assert done["status"] == "failed", done
    assert done["error"] == (
        f"the job ran longer than the limit of {TIME_LIMIT_S} s and was stopped"
    ), done
    assert done["attempts"] == 1
    assert TIME_LIMIT_S <= ran < TIME_LIMIT_S + STOP_WITHIN_S, "stopped soon after the limit"
    assert stack.job_folder(job_id) == [], "no partial outputs are left"
    assert worker.poll() is None, "the limit stops the job, not the worker"
