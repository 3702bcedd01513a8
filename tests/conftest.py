"""Suite-wide: with BALANCER_REQUIRE_ALL_TESTS=1 (CI), a skipped test fails the run.

The service tests (PostgreSQL + Redis) and the browser test must really run in CI; a skip
there would hide a missing service. The one exception: tests that need a CUDA device (CI has
none; they run on a GPU machine, see tests/test_engine.py) skip with CUDA_SKIP_REASON.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []
CUDA_SKIP_REASON = "needs a CUDA device"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and CUDA_SKIP_REASON not in str(report.longrepr):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BALANCER_REQUIRE_ALL_TESTS") == "1" and _skipped:
        print(f"\nBALANCER_REQUIRE_ALL_TESTS=1 but {len(_skipped)} test(s) were skipped:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
