"""bench/throughput.py: its arguments, how it sums up a phase from job rows and reports, and
one tiny end-to-end dry run on the CPU (the real stack: `balancer api`, `balancer worker`,
SQLite, the embedded broker; a small dataset and a few GAN iterations, so no figure of it
means anything). The benchmark itself is run by hand; its figures go to docs/benchmarks.md."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.stack import GpuMemory, child_env, percentile
from bench.throughput import (
    job_config,
    main,
    minority_accuracy,
    parse_args,
    parse_metrics,
    summarize_phase,
    table,
    warmed_up,
    worker_figures,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def job(
    seed: int,
    start_s: float | None,
    wall_s: float | None,
    status: str = "succeeded",
    gan: float | None = 0.8,
    oversample: float | None = 0.6,
    error: str | None = None,
) -> dict:
    started = T0 + timedelta(seconds=start_s) if start_s is not None else None
    finished = started + timedelta(seconds=wall_s) if started and wall_s is not None else None
    return {
        "id": f"job-{seed}",
        "seed": seed,
        "status": status,
        "created_at": T0,
        "started_at": started,
        "finished_at": finished,
        "error": error,
        "minority_class": "1" if status == "succeeded" else None,
        "minority_accuracy": {"gan": gan, "oversample": oversample, "baseline": 0.1}
        if status == "succeeded"
        else None,
    }


def report(train: dict[str, int], accuracy: dict[str, dict[str, float]]) -> dict:
    return {
        "classes": [{"name": n, "train_count": c} for n, c in train.items()],
        "methods": {
            m: {
                "accuracy": 0.9,
                "per_class": {c: {"accuracy": a, "f1": 0.5} for c, a in per.items()},
            }
            for m, per in accuracy.items()
        },
    }


def test_defaults_are_the_issue_run() -> None:
    args = parse_args([])
    assert args.phase_list == ["first", 1, 8, 64]
    assert (args.k, args.majority, args.test_per_class, args.preset) == (10, 300, 200, "standard")
    assert job_config(args, 7) == {"preset": "standard", "device": "auto", "seed": 7}


def test_dry_run_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BALANCER_GPU_JOBS", raising=False)
    argv = [
        "--preset",
        "quick",
        "--set",
        "gan_iterations=50",
        "--set",
        "epochs=1",
        "--set",
        "classifier_augment=none",
        "--phases",
        "first,1,4",
        "--gpu-jobs",
        "2",
    ]
    args = parse_args(argv)
    assert args.phase_list == ["first", 1, 4] and args.gpu_jobs == 2
    assert job_config(args, 3) == {
        "preset": "quick",
        "device": "auto",
        "gan_iterations": 50,
        "epochs": 1,
        "classifier_augment": "none",
        "seed": 3,
    }


def test_gpu_jobs_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALANCER_GPU_JOBS", "3")
    assert parse_args([]).gpu_jobs == 3
    assert parse_args(["--gpu-jobs", "5"]).gpu_jobs == 5
    monkeypatch.delenv("BALANCER_GPU_JOBS")
    assert parse_args([]).gpu_jobs is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--phases", "1,first"],
        ["--phases", "first,first"],
        ["--phases", "0"],
        ["--phases", "x"],
        ["--set", "gan_iterations"],
        ["--set", "seed=3"],
        ["--set", "no_such_option=1"],
        ["--set", "epochs=0"],
        ["--gpu-jobs", "0"],
        ["--k", "0"],
    ],
)
def test_bad_arguments_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)


def test_minority_accuracy_reads_the_class_with_fewest_training_images() -> None:
    r = report(
        {"1": 10, "2": 300, "3": 300},
        {"gan": {"1": 0.75, "2": 0.99}, "oversample": {"1": 0.65}, "baseline": {"2": 1.0}},
    )
    assert minority_accuracy(r) == {"gan": 0.75, "oversample": 0.65, "baseline": None}


def test_summary_spans_first_claim_to_last_success() -> None:
    # 4 jobs, two at a time: claims at 0, 0, 10, 20; the last success at 50.
    jobs = [
        job(0, 0, 10, gan=0.7),
        job(1, 0, 20, gan=0.9),
        job(2, 10, 40, gan=0.8),
        job(3, 20, 20, gan=None),
    ]
    memory = {"baseline": {"0": 600.0}, "peak": {"0": 4100.0}}
    s = summarize_phase("4", jobs, memory)
    assert (s["jobs"], s["succeeded"], s["failed"], s["errors"]) == (4, 4, 0, [])
    assert s["span_s"] == 50.0 and s["jobs_per_hour"] == 4 / 50 * 3600
    assert s["wall_s"] == {"p50": 20.0, "p95": pytest.approx(37.0), "max": 40.0}
    assert s["worker_start_to_success_s"] is None
    gan, over = s["minority_accuracy"]["gan"], s["minority_accuracy"]["oversample"]
    assert gan == {"mean": 0.8, "sd": 0.1, "n": 3}  # the job without a figure is left out
    assert over == {"mean": 0.6, "sd": 0.0, "n": 4} and s["minority_accuracy"]["class"] == "1"
    rows = s["job_rows"]
    assert [r["seed"] for r in rows] == [0, 1, 2, 3] and rows[2]["wall_s"] == 40.0
    assert (
        rows[2]["queued_s"] == 10.0
        and rows[2]["started_at"] == (T0 + timedelta(seconds=10)).isoformat()
    )
    md = table([s])
    assert "0: 600→4100" in md and "0.800 ± 0.100" in md and "| 4 " in md
    json.dumps(s)  # every figure is plain JSON


def test_stage_means_over_the_jobs_with_timings() -> None:
    jobs = [job(0, 0, 10), job(1, 0, 20), job(2, 0, 30)]
    jobs[0]["timings"] = {"gan_seconds": 2.0, "loading_seconds": 0.5}
    jobs[1]["timings"] = {"gan_seconds": 3.0}
    s = summarize_phase("3", jobs, None)
    assert s["stage_s"] == {"gan_seconds": 2.5, "loading_seconds": 0.5}


def test_first_phase_counts_from_the_worker_start() -> None:
    s = summarize_phase("first", [job(0, 30, 5)], None, worker_started_at=T0 + timedelta(seconds=2))
    assert s["worker_start_to_success_s"] == 33.0 and s["wall_s"]["max"] == 5.0
    assert s["jobs_per_hour"] == 3600 / 5
    assert s["minority_accuracy"]["gan"] == {"mean": 0.8, "sd": None, "n": 1}
    line = table([s]).splitlines()[-1]
    assert "| 33 " in line and "n/a" in line and "0.800 " in line


def test_failed_jobs_are_counted_and_their_errors_kept() -> None:
    jobs = [
        job(0, 0, 10),
        job(1, 0, 3, status="failed", error="CUDA out of memory"),
        job(2, None, None, status="canceled", error="canceled"),
    ]
    s = summarize_phase("3", jobs, None)
    assert (s["succeeded"], s["failed"]) == (1, 2)
    assert s["span_s"] == 10.0 and s["wall_s"]["p50"] == 10.0
    assert [e["error"] for e in s["errors"]] == ["CUDA out of memory", "canceled"]
    assert s["minority_accuracy"]["gan"]["n"] == 1


def test_nothing_succeeded_gives_no_rate() -> None:
    s = summarize_phase("1", [job(0, 0, 3, status="failed", error="boom")], None)
    assert (s["span_s"], s["jobs_per_hour"], s["wall_s"]["max"]) == (None, None, None)
    assert s["minority_accuracy"]["gan"] == {"mean": None, "sd": None, "n": 0}
    assert "n/a" in table([s])


def test_worker_metrics_say_when_the_warm_up_is_over() -> None:
    text = "\n".join(
        [
            "# HELP balancer_worker_warm_up Pool processes per warm-up state",
            'balancer_worker_warm_up{state="running"} 0.0',
            'balancer_worker_warm_up{state="done"} 2.0',
            "balancer_worker_warm_up_seconds 3.5",
            "balancer_worker_gpu_memory_peak_bytes 1.048576e+09",
        ]
    )
    figures = worker_figures(parse_metrics(text))
    assert figures == {
        "warm_up": {"done": 2},
        "warm_up_seconds": 3.5,
        "torch_gpu_memory_peak_mib": 1000.0,
    }
    assert warmed_up(figures)
    assert not warmed_up({"warm_up": {"running": 1, "done": 1}})
    assert not warmed_up({"warm_up": {}})


def test_shared_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    monkeypatch.setenv("PYTHONPATH", "/wheels")
    monkeypatch.setenv("BALANCER_DATABASE_URL", "postgresql://elsewhere")
    env = child_env({"BALANCER_QUEUE": "q"})
    assert env["PYTHONPATH"].endswith(":/wheels") and "BALANCER_DATABASE_URL" not in env
    monkeypatch.setenv("PATH", "/nonexistent")
    with GpuMemory(0.1) as gpu:  # no nvidia-smi on PATH: nothing sampled
        pass
    assert not gpu.available and gpu.of(["0"]) is None


@pytest.mark.slow
def test_a_tiny_dry_run_through_the_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tp.json"
    argv = [
        "--preset",
        "quick",
        "--set",
        "gan_iterations=5",
        "--set",
        "epochs=1",
        "--set",
        "device=cpu",
        "--k",
        "3",
        "--majority",
        "20",
        "--test-per-class",
        "10",
        "--phases",
        "1",
        "--gpu-jobs",
        "2",
        "--timeout-s",
        "600",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["env"]["BALANCER_GPU_JOBS"] == "2" and result["phases"] == ["1"]
    (phase,) = result["results"]
    assert (phase["phase"], phase["succeeded"], phase["failed"]) == ("1", 1, 0)
    (row,) = phase["job_rows"]
    assert row["seed"] == 0 and row["device"].startswith("cpu") and row["minority_class"] == "1"
    assert set(row["minority_accuracy"]) == {"gan", "oversample", "baseline"}
    assert phase["worker"]["warm_up"]  # the warm-up was waited out before the batch
    assert capsys.readouterr().out.splitlines()[-1].startswith("| 1 ")


def test_gpu_memory_baseline_and_peak_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in nvidia-smi: 500 MiB used at first, 3000 from the second reading on.
    calls = tmp_path / "calls"
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo x >> {calls}\n"
        f'if [ $(wc -l < {calls}) -le 1 ]; then echo "0, 500"; else echo "0, 3000"; fi\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    deadline = time.monotonic() + 30
    with GpuMemory(0.05) as gpu:
        while len(calls.read_text().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert gpu.available and gpu.baseline == {"0": 500.0} and gpu.peak == {"0": 3000.0}
    assert gpu.of(["0"]) == {"0": 3000.0}
