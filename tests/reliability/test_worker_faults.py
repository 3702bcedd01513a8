"""Worker faults on the embedded stack (SQLite + the SQLAlchemy broker, real processes):
SIGKILL during GAN training, a worker that keeps dying, cancel during training.

The embedded broker never hands back a message whose worker died (it marks it invisible on
delivery), so every recovery here is the sweeper's: lease lapsed -> re-queued -> sent again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.service.datasets import make_zip

from .stack import ENDLESS, FINISHED, TRAINING, Stack, in_training

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SMALL = {"circle": 12, "square": 6, "stripe": 6}
REACH_TRAINING_S = 120  # a loaded 2-core machine needs a while to load torch and the data
LEASE_RECOVERY_S = 30  # lease 5 s + sweep 1 s, with room for a loaded machine
JOB_S = 240
CANCEL_WITHIN_S = 10


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("worker-faults")).prepare()
    try:
        s.start_api()
        yield s
    finally:
        s.stop()


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test(stack: Stack) -> Iterator[None]:
    yield
    stack.kill_workers()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_zip(tmp_path_factory.mktemp("data") / "small.zip", SMALL).read_bytes()


def test_cancel_during_training_stops_the_job_within_seconds(stack: Stack, dataset: bytes) -> None:
    stack.start_worker()
    job_id = stack.submit(dataset, ENDLESS)["id"]
    stack.wait_job(job_id, in_training(1), "GAN training", REACH_TRAINING_S)

    asked = time.monotonic()
    assert stack.client.delete(f"/v1/jobs/{job_id}").status_code == 202
    done = stack.wait_job(job_id, lambda j: j["status"] in FINISHED, "the cancel", CANCEL_WITHIN_S)
    took = time.monotonic() - asked
    assert done["status"] == "canceled", done
    assert done["error"] is None and done["finished_at"]
    assert stack.job_folder(job_id) == [], "no partial outputs are left"
    print(f"fault: canceled {took:.1f} s after the request")


def test_worker_killed_during_gan_training_job_is_retried_and_succeeds(
    stack: Stack, dataset: bytes
) -> None:
    worker = stack.start_worker()
    job_id = stack.submit(dataset, TRAINING)["id"]
    stack.wait_job(job_id, in_training(1), "GAN training", REACH_TRAINING_S)
    stack.kill_worker(worker)
    killed = time.monotonic()

    # Nobody holds the job now; once its lease lapses the sweeper puts it back in the queue.
    back = stack.wait_job(job_id, lambda j: j["status"] != "running", "re-queue", LEASE_RECOVERY_S)
    assert (back["status"], back["attempts"]) == ("queued", 1), back
    requeued = time.monotonic() - killed

    stack.start_worker()
    done = stack.wait_job(job_id, lambda j: j["status"] in FINISHED, "the retry", JOB_S)
    print(f"fault: re-queued {requeued:.1f} s after the kill, succeeded after "
          f"{time.monotonic() - killed:.1f} s")  # fmt: skip
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2 and done["error"] is None
    resp = stack.client.get(f"/v1/jobs/{job_id}/balanced-dataset")
    assert resp.status_code == 200 and resp.content.startswith(b"PK")
    assert stack.job_folder(job_id) == ["out"], "no attempt folder is left"


def test_a_job_whose_worker_keeps_dying_fails_with_a_clear_error(
    stack: Stack, dataset: bytes
) -> None:
    job_id = stack.submit(dataset, TRAINING)["id"]
    for attempt in (1, 2):  # BALANCER_MAX_ATTEMPTS=2
        worker = stack.start_worker()
        stack.wait_job(job_id, in_training(attempt), f"attempt {attempt}", REACH_TRAINING_S)
        stack.kill_worker(worker)

    killed = time.monotonic()
    done = stack.wait_job(job_id, lambda j: j["status"] != "running", "giving up", LEASE_RECOVERY_S)
    print(f"fault: failed {time.monotonic() - killed:.1f} s after the second kill")
    assert done["status"] == "failed", done
    assert done["error"].startswith("the worker running this job stopped responding 2 times")
    assert done["error"].endswith("giving up")
    assert done["finished_at"] and done["attempts"] == 2
    assert stack.job_folder(job_id) == []
    # A worker started now finds nothing to do: the message the sweeper may still have in
    # the queue is for a finished job.
    stack.start_worker()
    time.sleep(2)
    assert stack.job(job_id)["status"] == "failed"
