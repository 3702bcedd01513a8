"""bench/multi_gpu.py's arguments and how it sums up a step from job rows (no run here: the
benchmark itself starts a stack and is run by hand, its figures go to docs/benchmarks.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.multi_gpu import job_config, parse_args, summarize, table

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(gpu: str, start_s: float, wall_s: float, status: str = "succeeded") -> dict:
    return {
        "status": status,
        "gpu": gpu,
        "worker_id": f"host:{100 + int(gpu)}",
        "started_at": T0 + timedelta(seconds=start_s),
        "finished_at": T0 + timedelta(seconds=start_s + wall_s),
    }


def test_defaults_are_the_issue_run() -> None:
    args = parse_args([])
    assert (args.gpu_ids, args.jobs, args.step_list) == (["0", "1"], 64, ["1gpu", "2gpu", "fault"])
    assert job_config(args) == {}


def test_job_config_takes_only_what_was_given() -> None:
    args = parse_args(["--preset", "quick", "--gan-iterations", "5", "--epochs", "1"])
    assert job_config(args) == {"preset": "quick", "gan_iterations": 5, "epochs": 1}


@pytest.mark.parametrize(
    "argv",
    [["--gpus", "0"], ["--gpus", "1,1"], ["--gpus", "0,1,2"], ["--steps", "3gpu"],
     ["--fault-jobs", "1"]],
)  # fmt: skip
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_summary_spans_first_claim_to_last_success() -> None:
    # Two GPUs, 4 jobs of 10-40 s; the span runs from t=0 to t=50.
    rows = [row("0", 0, 10), row("1", 0, 20), row("0", 10, 40), row("1", 20, 20)]
    s = summarize("2gpu", rows, {"0": 1000.0, "1": 1100.0})
    assert s["all_succeeded"] and s["seconds"] == 50.0
    assert s["jobs_per_hour"] == 4 / 50 * 3600
    assert s["p50_s"] == 20.0 and s["p95_s"] == pytest.approx(37.0)
    assert s["jobs_per_gpu"] == {"0": 2, "1": 2}
    assert [(j["gpu"], j["worker"], j["wall_s"]) for j in s["job_rows"]][2] == ("0", "host:100", 40)
    assert "0:2 1:2" in table([s]) and "0:1000 1:1100" in table([s])


def test_a_failed_job_is_counted_and_memory_without_nvidia_smi_is_na() -> None:
    s = summarize("1gpu", [row("0", 0, 10), row("0", 10, 5, status="failed")], None)
    assert (s["succeeded"], s["all_succeeded"], s["jobs_per_gpu"]) == (1, False, {"0": 1})
    assert "n/a" in table([s])
