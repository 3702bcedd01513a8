"""PostgreSQL goes away under a running API, and comes back: the API answers 503
problem+json meanwhile (never a 500, never a hang) and recovers without a restart.

The database is a throwaway cluster of this test's own; the machine's server is untouched.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service.datasets import make_zip

from .servers import ThrowawayPostgres
from .stack import TINY, Stack, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.timeout(240)]
RECOVER_WITHIN_S = 30


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    pg = ThrowawayPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def assert_503(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert resp.headers["retry-after"].isdigit()
    body = resp.json()
    assert body["status"] == 503 and body["type"].endswith("/database-unavailable"), body


def test_api_answers_503_while_the_database_is_down_and_recovers(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    data = make_zip(tmp_path / "small.zip", {"a": 6, "b": 6}).read_bytes()
    # No worker: the jobs stay queued, which is all this test needs.
    stack = Stack(tmp_path / "data", BALANCER_DATABASE_URL=postgres.url).prepare()
    try:
        stack.start_api()
        job_id = stack.submit(data, TINY)["id"]
        assert stack.client.get("/v1/jobs").status_code == 200

        postgres.stop()
        files = {"dataset": ("d.zip", data, "application/zip")}
        for resp in (
            stack.client.get("/v1/jobs"),
            stack.client.get(f"/v1/jobs/{job_id}"),
            stack.client.get(f"/v1/jobs/{uuid.uuid4()}"),
            stack.client.delete(f"/v1/jobs/{job_id}"),
            stack.client.post("/v1/jobs", files=files),
        ):
            assert_503(resp)
        assert stack.client.get("/healthz").status_code == 200, "the process itself is fine"
        ready = stack.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"

        postgres.start()
        back = time.monotonic()
        # Same API process: its connection pool replaces the dead connections by itself.
        ok = lambda: stack.client.get("/v1/jobs").status_code == 200  # noqa: E731
        wait_until(ok, "the API to reach the database again", RECOVER_WITHIN_S, stack.log_tail)
        print(f"fault: API answered 200 {time.monotonic() - back:.2f} s after PostgreSQL was up")
        assert stack.job(job_id)["status"] == "queued", "the accepted job is still there"
        new_id = stack.submit(data, TINY)["id"]
        assert stack.client.delete(f"/v1/jobs/{new_id}").status_code in (202, 204)
        assert stack.api is not None and stack.api.poll() is None, "no restart happened"
        assert "Traceback" not in stack.logs[0].read_text(), "a 503 is not a crash"
    finally:
        stack.stop()
