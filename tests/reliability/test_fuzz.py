"""Schemathesis against the live API's /openapi.json with a valid key, as its CLI is run by
hand: every phase (examples, coverage, fuzzing, stateful) and every check. No answer may be a
5xx; every answer must match the document (status code, content type, body schema, headers,
`Allow`); invalid requests must be refused and valid ones accepted; the stateful phase
follows the OpenAPI links from a new job's `id` to the routes about that job.

A schema cannot say "a zip of class folders", so positive uploads carry real small datasets
(tests/reliability/fuzz_hooks.py). Generation is deterministic, so CI does not turn flaky;
set BALANCER_FUZZ_RANDOM=1 to explore new inputs locally. No worker runs: accepted jobs
stay queued.

Left out, each for a reason:
- the event stream of a real job, which stays open until the job ends (no worker here):
  it is fuzzed in a run of its own, where every id is unknown (404);
- the `use_after_free` check: DELETE of a queued or running job cancels it (200/202) and
  keeps it readable as `canceled`, by design (README); the check expects a 404 after any 2xx
  DELETE. Deleting a finished job does remove it (a 404 after, tests/service/test_api.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .stack import Stack, python_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
MAX_EXAMPLES = 30  # per operation and phase: about a minute on 2 cores
EVENTS = "/v1/jobs/{job_id}/events"
PHASES = "examples,coverage,fuzzing,stateful"


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("fuzz"), BALANCER_MAX_UPLOAD_BYTES="1000000").prepare()
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def schemathesis(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{stack.base_url}/openapi.json",
        "--header", f"Authorization: Bearer {stack.key}",
        "--max-examples", str(MAX_EXAMPLES),
        "--checks", "all",
        "--workers", "1",
        "--request-timeout", "30",
        "--no-color",
        # The key above is sent with every request; a generated (broken) Authorization or
        # X-API-Key would be replaced by it, so a "negative" case would carry a valid key.
        # Missing and wrong keys are the ignored_auth check's job.
        "--generation-with-security-parameters", "false",
        *([] if os.environ.get("BALANCER_FUZZ_RANDOM") == "1" else ["--generation-deterministic"]),
        *args,
    ]  # fmt: skip
    env = os.environ | {
        "PYTHONPATH": python_path(),
        "SCHEMATHESIS_HOOKS": "tests.reliability.fuzz_hooks",
    }
    # Run in the stack's folder: Schemathesis keeps state in ./.schemathesis.
    return subprocess.run(
        cmd, cwd=stack.data_dir, env=env, capture_output=True, text=True, timeout=800
    )


def _failed(done: subprocess.CompletedProcess[str], stack: Stack) -> str:
    return f"{done.stdout[-20_000:]}\n{done.stderr[-4000:]}\n{stack.log_tail()}"


def test_every_phase_and_check_passes(fuzzed_api: Stack) -> None:
    done = schemathesis(
        fuzzed_api,
        "--phases", PHASES,
        "--exclude-checks", "use_after_free",
        "--exclude-path", EVENTS,
    )  # fmt: skip
    assert done.returncode == 0, _failed(done, fuzzed_api)
    out = done.stdout
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, f"phase {phase} did not pass:\n{_failed(done, fuzzed_api)}"
    # The links from POST /v1/jobs were followed with real job ids.
    covered = int(out.split("API Links:")[1].split("covered")[0])
    assert covered >= 7, out


def test_event_stream_route_passes(fuzzed_api: Stack) -> None:
    done = schemathesis(
        fuzzed_api, "--phases", "examples,coverage,fuzzing", "--include-path", EVENTS
    )
    assert done.returncode == 0, _failed(done, fuzzed_api)


# --- as a third party would: the plain CLI, no hooks --------------------------------------

THIRD_PARTY_EXAMPLES = 150
MIN_LINKS = 20
# The stateful phase stops at its first failure, and the allowed ST202 is one: where it comes
# early, few links are followed (16 to 49 of 93 in five unseeded runs). A seed that covered
# 44 makes CI repeatable; BALANCER_FUZZ_RANDOM=1 runs unseeded.
THIRD_PARTY_SEED = "125803296942198522114136710054524325624"


@pytest.fixture(scope="module")
def plain_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The API as deployed (default sweeper timings), no worker: accepted jobs stay queued.
    Two settings: an owner may have any number of jobs queued, so the run is not all 429s,
    and event streams close after a second."""
    stack = Stack(
        tmp_path_factory.mktemp("schemathesis"),
        BALANCER_MAX_UPLOAD_BYTES="1000000",
        BALANCER_SWEEP_INTERVAL_S="10",
        BALANCER_RESEND_QUEUED_AFTER_S="600",
        BALANCER_LEASE_S="60",
        BALANCER_HEARTBEAT_INTERVAL_S="0",
        BALANCER_OWNER_MAX_ACTIVE_JOBS="100000",
        # No worker runs, so a job's event stream would stay open, and Schemathesis reads
        # each for 10 s (its read timeout) on every call: close them after a second.
        BALANCER_EVENTS_MAX_S="1",
    ).prepare()
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def failure_codes(out: str) -> list[tuple[str, str]]:
    """(code, the text of its report up to the next one) for each failure in the output."""
    blocks = re.split(r"^- (ST\d+) ", out.split("= FAILURES =", 1)[-1], flags=re.MULTILINE)
    return list(zip(blocks[1::2], blocks[2::2], strict=True))


@pytest.mark.slow
@pytest.mark.timeout(3000)
def test_schemathesis_as_a_third_party_runs_it(plain_api: Stack) -> None:
    """The issue's command, plus a fixed --seed (THIRD_PARTY_SEED): `schemathesis run
    URL/openapi.json -H "Authorization: Bearer KEY" --checks all --phases
    examples,coverage,fuzzing,stateful -n 150`, with no hooks. The built-in dataset's id is
    the schema's example, so the stateful phase starts real jobs and follows the links from
    them and from datasets. The one failure allowed: ST202 for random bytes posted as a zip
    (a schema cannot say "a zip of class folders"), which the service refuses as an invalid
    dataset."""
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{plain_api.base_url}/openapi.json",
        "-H", f"Authorization: Bearer {plain_api.key}",
        "--checks", "all",
        "--phases", PHASES,
        "-n", str(THIRD_PARTY_EXAMPLES),
        "--no-color",
        *([] if os.environ.get("BALANCER_FUZZ_RANDOM") == "1" else ["--seed", THIRD_PARTY_SEED]),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "SCHEMATHESIS_HOOKS"}
    done = subprocess.run(
        cmd, cwd=plain_api.data_dir, env=env, capture_output=True, text=True, timeout=2900
    )
    out = done.stdout
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", out)
    assert links, _failed(done, plain_api)
    (plain_api.data_dir / "schemathesis.txt").write_text(out)
    assert int(links[1]) >= MIN_LINKS, out
    for code, report in failure_codes(out):
        assert code == "ST202" and "/invalid-dataset" in report, f"{code}:\n{report}"
        assert "not_a_zip" in report or "unreadable_archive" in report, report
    summary = out.rsplit("SUMMARY", 1)[-1]
    failures = (
        summary.split("Failures:", 1)[-1].split("Test cases:", 1)[0] if done.returncode else ""
    )
    kinds = [line.strip() for line in failures.splitlines() if "❌" in line]
    assert all(k.startswith("❌ ST202 ") for k in kinds), out
    assert "Errors:" not in summary, out
