"""Redis restarts, without persistence, while jobs wait in its queue: their messages are
gone, yet every accepted job still reaches a worker (the sweeper sends it again).

The broker is a redis-server of this test's own on a free port; the machine's Redis is
untouched. The database is SQLite: only the broker matters here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.datasets import make_zip

from .servers import ThrowawayRedis
from .stack import ENDLESS, FINISHED, TINY, Stack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(300)]
WAITING_JOBS = 3
CLAIM_WITHIN_S = 90


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_jobs_queued_in_redis_survive_a_redis_restart(
    redis_server: ThrowawayRedis, tmp_path: Path
) -> None:
    data = make_zip(tmp_path / "small.zip", {"a": 8, "b": 5}).read_bytes()
    stack = Stack(tmp_path / "data", BALANCER_BROKER_URL=redis_server.url).prepare()
    try:
        stack.start_api()
        stack.start_worker()
        # One job keeps the only worker busy, so the others wait in Redis's list.
        busy = stack.submit(data, ENDLESS)["id"]
        stack.wait_job(busy, lambda j: j["status"] == "running", "the busy job", CLAIM_WITHIN_S)
        waiting = [stack.submit(data, TINY)["id"] for _ in range(WAITING_JOBS)]
        with redis_server.client() as r:
            assert r.llen("gpu") >= WAITING_JOBS, "the messages wait in Redis"
            run_id = r.info("server")["run_id"]

        redis_server.kill()
        redis_server.start()  # empty: no RDB, no AOF
        with redis_server.client() as r:
            assert r.info("server")["run_id"] != run_id
        # The API reconnects by itself and takes new jobs.
        waiting.append(stack.submit(data, TINY)["id"])
        assert stack.client.delete(f"/v1/jobs/{busy}").status_code == 202

        for job_id in waiting:  # one worker: they are claimed one after the other
            claimed = stack.wait_job(
                job_id, lambda j: j["status"] != "queued", "a worker to claim it", CLAIM_WITHIN_S
            )
            assert claimed["attempts"] == 1, claimed
            # Cancel it: only the delivery is under test. (204: it had just succeeded, and
            # the DELETE removed it.)
            running = claimed["status"] == "running"
            if running and stack.client.delete(f"/v1/jobs/{job_id}").status_code == 204:
                continue
            done = stack.wait_job(job_id, lambda j: j["status"] in FINISHED, "the end", 60)
            assert done["status"] in {"canceled", "succeeded"}, done

        api_log = stack.logs[0].read_text()
        resent = [j for j in waiting[:WAITING_JOBS] if f"job {j}: queued since" in api_log]
        assert resent == waiting[:WAITING_JOBS], "the lost messages were sent again"
        wait_until(lambda: stack.api and stack.api.poll() is None, "the API to be alive", 1)
    finally:
        stack.stop()
