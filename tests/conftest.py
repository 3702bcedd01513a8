"""Suite-wide: with BALANCER_REQUIRE_ALL_TESTS=1 (CI), a skipped test fails the run.

The service tests (PostgreSQL + Redis) and the browser test must really run in CI; a skip
there would hide a missing service.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("BALANCER_REQUIRE_ALL_TESTS") == "1" and _skipped:
        print(f"\nBALANCER_REQUIRE_ALL_TESTS=1 but {len(_skipped)} test(s) were skipped:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
