"""Schemathesis against the live API's /openapi.json, with a valid key: for every operation,
a bounded number of generated requests, valid ones and invalid ones; no answer may be a 5xx,
and every answer must match the document (status code, content type, body schema, headers).

Hypothesis is driven here directly, operation by operation, rather than through
schemathesis' pytest plugin, whose lazy fixture loading does not work with this pytest.
Generation is derandomized: the same requests every run, so CI does not turn flaky; set
BALANCER_FUZZ_RANDOM=1 to explore new inputs locally.

No worker runs: an upload that happens to be accepted just stays queued.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.datasets import make_zip

from .stack import TINY, Stack

pytestmark = pytest.mark.timeout(600)
MAX_EXAMPLES = 25  # per operation and generation mode
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("BALANCER_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


@pytest.fixture(scope="module")
def fuzzed_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("fuzz"), BALANCER_MAX_UPLOAD_BYTES="1000000").prepare()
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def fuzz_operation(
    operation,  # noqa: ANN001 (schemathesis APIOperation)
    mode: GenerationMode,
    stack: Stack,
    path_parameters: dict[str, str] | None = None,
) -> str | None:
    """Run the operation's generated cases; the first failure's report, or None."""
    auth = {"Authorization": f"Bearer {stack.key}"}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @FUZZ_SETTINGS
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=stack.base_url, headers=auth, checks=CHECKS, timeout=30)

    try:
        run()
    except Unsatisfiable:  # negative mode, and nothing to get wrong (no parameters, no body)
        return None
    except Exception as exc:  # schemathesis' failure group: its text has a curl to replay it
        return f"{operation.method.upper()} {operation.path} ({mode.value}):\n{exc}"
    return None


def operations(stack: Stack) -> list:
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json")
    found = [result.ok() for result in schema.get_all_operations()]
    assert len(found) >= 8, [f"{o.method} {o.path}" for o in found]
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_generated_request_is_answered_as_documented(
    fuzzed_api: Stack, mode: GenerationMode
) -> None:
    failures = [f for op in operations(fuzzed_api) if (f := fuzz_operation(op, mode, fuzzed_api))]
    assert not failures, "\n\n".join(failures) + f"\n{fuzzed_api.log_tail()}"


def test_requests_about_an_existing_job_are_answered_as_documented(fuzzed_api: Stack) -> None:
    """Random ids only ever meet 404s; here the path names a real (queued) job."""
    data = make_zip(fuzzed_api.data_dir / "small.zip", {"a": 6, "b": 6}).read_bytes()
    job = {"job_id": fuzzed_api.submit(data, TINY)["id"]}
    # Its event stream would stay open for as long as the job is queued, i.e. for ever here.
    about_job = [o for o in operations(fuzzed_api) if "{job_id}" in o.path]
    about_job = [o for o in about_job if not o.path.endswith("/events")]
    about_job.sort(key=lambda o: o.method.upper() == "DELETE")  # cancel and delete it last
    failures = [
        f for op in about_job if (f := fuzz_operation(op, GenerationMode.POSITIVE, fuzzed_api, job))
    ]
    assert not failures, "\n\n".join(failures) + f"\n{fuzzed_api.log_tail()}"
