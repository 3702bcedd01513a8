"""Suite-wide: with BALANCER_REQUIRE_ALL_TESTS=1 (CI), a skipped test fails the run.

The service tests (PostgreSQL + Redis) and the browser test must really run in CI; a skip
there would hide a missing service. The one exception: tests that need a CUDA device (CI has
none; they run on a GPU machine, see tests/test_engine.py) skip with CUDA_SKIP_REASON.

One PyTorch thread per process, here and in every process the tests start (`balancer run`,
APIs, workers), unless OMP_NUM_THREADS is set: on the shared 2-core test machine two OpenMP
threads per process spin against the other processes' threads. Measured at load 7.5: the 8
input-form tests of test_sampler took 49 s with one thread and 256 s with two; in a whole
suite at load 4-9, test_sampler took 620 s with two threads (docs/testing.md). Set before
anything imports torch.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

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
