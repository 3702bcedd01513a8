"""Jobs per hour on one GPU through the real service (issue 13): `balancer api`, one `balancer
worker` running BALANCER_GPU_JOBS jobs at once, SQLite, the embedded broker and local files.

    python bench/throughput.py --out docs/results/throughput_DATE_h200.json
    python bench/throughput.py --gpu-jobs 4 --out /tmp/throughput_gpu4.json
    python bench/throughput.py --preset quick --set gan_iterations=50 --set epochs=1 \\
        --phases first,1,4 --gpu-jobs 2 --out /tmp/tp.json          # a CPU dry run

One stack in a temporary folder: migrations, an API key, `balancer api` on a free loopback
port, then `balancer worker` with BALANCER_GPU_JOBS from --gpu-jobs (else the caller's
BALANCER_GPU_JOBS, else unset: the service's default) and BALANCER_OWNER_MAX_ACTIVE_JOBS above
the largest batch. Children run `python -m cli.main` from the repository root, with the
caller's PYTHONPATH kept behind the root. Every job is the standard seed-sized one: MNIST digits
1/2/3 with k/300/300 training and 200 test images each (one zip, drawn with seed 0), config =
the preset (standard by default), device auto, the --set overrides, and a `seed` of its own
(--first-seed, then +1 per job in submission order) so no two jobs are the same.

Phases (--phases, in order, one API and one worker throughout):
  first  the worker's first job, submitted right after `balancer worker` starts, so the
         worker's start and GPU warm-up are included: worker start -> success, and the job's
         own claim -> success (a job is claimed once the warm-up has finished).
  N      N jobs submitted at once (a thread pool of uploads), polled until all end. Without
         a `first` phase, the worker's warm-up is waited out before the first batch.

Per phase: jobs/hour = succeeded jobs over first claim (started_at) to last success
(finished_at); p50 / p95 / max job wall time (started_at -> finished_at, from the API's job
resource); failed jobs with their errors; GPU memory.used from nvidia-smi every 0.5 s
(baseline = the first sample, at the phase's start; peak); the minority class's (digit 1)
accuracy (recall) of the gan and oversample methods, mean ± sd over the phase's jobs, from
each job's report.json (methods.<method>.per_class.<class>.accuracy). --out gets every job's
figures and the summaries (rewritten after each phase), with the mean seconds per stage of
the jobs' report timings (stage_s); a markdown table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import format_table, load_digits, parse_set  # noqa: E402
from bench.stack import (  # noqa: E402
    EmbeddedStack,
    GpuMemory,
    free_port,
    git_commit,
    percentile,
    wait,
)

FIRST = "first"
DIGITS = (1, 2, 3)  # digit 1 is the minority class
DATASET_SEED = 0
GPU_SAMPLE_S = 0.5
POLL_S = 1.0
START_S = 300.0
TERMINAL = {"succeeded", "failed", "canceled"}
METHODS = ("gan", "oversample", "baseline")
WARM_UP_STATES = ("off", "running", "done", "skipped", "failed")

Phase = str | int


def parse_phases(text: str) -> list[Phase]:
    """'first,1,8,64' -> ['first', 1, 8, 64]; `first` only in first place."""
    phases: list[Phase] = []
    for part in (p.strip() for p in text.split(",")):
        if part == FIRST:
            if phases:
                raise ValueError("'first' can only be the first phase")
            phases.append(FIRST)
        elif part.isdigit() and int(part) >= 1:
            phases.append(int(part))
        else:
            raise ValueError(f"phase {part!r}: give 'first' or a number of jobs (>= 1)")
    return phases


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--phases", default="first,1,8,64", help="default first,1,8,64")
    p.add_argument("--k", type=int, default=10, help="training images of digit 1 (default 10)")
    p.add_argument("--majority", type=int, default=300, help="of digits 2 and 3 (default 300)")
    p.add_argument("--test-per-class", type=int, default=200, help="test images (default 200)")
    p.add_argument("--preset", choices=["quick", "standard"], default="standard")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="job config override, e.g. gan_iterations=50 (repeatable)")  # fmt: skip
    p.add_argument(
        "--gpu-jobs",
        type=int,
        default=None,
        help="BALANCER_GPU_JOBS for the worker (default: the caller's, else unset)",
    )
    p.add_argument("--first-seed", type=int, default=0, help="config seed of the first job")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per phase (default 3600)")
    p.add_argument("--upload-threads", type=int, default=16, help="concurrent uploads")
    p.add_argument("--keep", action="store_true", help="keep the stack's folder (logs, DB, jobs)")
    p.add_argument("--out", type=Path, help="write every job's figures and the summary here")
    args = p.parse_args(argv)
    try:
        args.phase_list = parse_phases(args.phases)
        args.overrides = dict(parse_set(s) for s in args.sets)
    except ValueError as exc:
        p.error(str(exc))
    if "seed" in args.overrides:
        p.error("--set seed=...: each job gets a seed of its own (--first-seed)")
    if min(args.k, args.majority, args.test_per_class, args.upload_threads) < 1:
        p.error("--k, --majority, --test-per-class and --upload-threads must be >= 1")
    if args.gpu_jobs is None and os.environ.get("BALANCER_GPU_JOBS"):
        args.gpu_jobs = int(os.environ["BALANCER_GPU_JOBS"])
    if args.gpu_jobs is not None and args.gpu_jobs < 1:
        p.error("--gpu-jobs must be >= 1")
    from pipeline.config import RunConfig  # torch-free

    try:
        RunConfig.from_dict(job_config(args, 0))
    except (ValueError, TypeError) as exc:
        p.error(f"job config: {exc}")
    return args


def job_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {"preset": args.preset, "device": "auto", **args.overrides, "seed": seed}


def parse_time(value: str | None) -> datetime | None:
    """An API timestamp (ISO 8601); naive ones are UTC."""
    if not value:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def minority_class(report: dict[str, Any]) -> str:
    """The class with the fewest training images (digit 1 here)."""
    classes = report.get("classes") or []
    return str(min(classes, key=lambda c: c["train_count"])["name"]) if classes else "1"


def minority_accuracy(report: dict[str, Any]) -> dict[str, float | None]:
    """Per method, the minority class's accuracy (recall), mean over the job's classifier
    seeds: report["methods"][method]["per_class"][class]["accuracy"]."""
    name = minority_class(report)
    figures: dict[str, float | None] = {}
    for method in METHODS:
        try:
            figures[method] = float(report["methods"][method]["per_class"][name]["accuracy"])
        except (KeyError, TypeError, ValueError):
            figures[method] = None
    return figures


def mean_sd(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean and sample sd (n - 1) of the values that are there; sd None below 2."""
    xs = [v for v in values if v is not None]
    return {
        "mean": round(statistics.fmean(xs), 4) if xs else None,
        "sd": round(statistics.stdev(xs), 4) if len(xs) > 1 else None,
        "n": len(xs),
    }


def _seconds(a: datetime | None, b: datetime | None) -> float | None:
    return round((b - a).total_seconds(), 2) if a and b else None


def summarize_phase(
    name: str,
    jobs: list[dict[str, Any]],
    memory: dict[str, dict[str, float]] | None,
    worker_started_at: datetime | None = None,
) -> dict[str, Any]:
    """A phase's figures from its jobs: dicts with id, seed, status, created_at, started_at,
    finished_at (datetimes or None), error, and minority_accuracy (minority_accuracy()'s
    dict, None without a report). memory: {"baseline": {gpu: MiB}, "peak": {gpu: MiB}}, None
    without nvidia-smi. worker_started_at: for `first`, when the worker process started."""
    done = [j for j in jobs if j["status"] == "succeeded" and j["started_at"] and j["finished_at"]]
    walls = [(j["finished_at"] - j["started_at"]).total_seconds() for j in done]
    starts = [j["started_at"] for j in jobs if j["started_at"]]
    span = (max(j["finished_at"] for j in done) - min(starts)).total_seconds() if done else None
    classes = sorted({j.get("minority_class") for j in done} - {None})
    accuracy: dict[str, Any] = {"class": ",".join(classes) or None}
    for method in METHODS:
        values = [(j.get("minority_accuracy") or {}).get(method) for j in done]
        accuracy[method] = mean_sd(values)
    return {
        "phase": name,
        "jobs": len(jobs),
        "succeeded": len(done),
        "failed": len(jobs) - len(done),
        "span_s": round(span, 2) if span else None,
        "jobs_per_hour": round(len(done) / span * 3600, 2) if span else None,
        "wall_s": {
            "p50": round(percentile(walls, 0.5), 2) if walls else None,
            "p95": round(percentile(walls, 0.95), 2) if walls else None,
            "max": round(max(walls), 2) if walls else None,
        },
        # `first`: from `balancer worker` starting to its first job's success.
        "worker_start_to_success_s": _seconds(
            worker_started_at, max(j["finished_at"] for j in done)
        )
        if worker_started_at and done
        else None,
        "gpu_memory_mib": memory,
        "minority_accuracy": accuracy,
        "stage_s": stage_means(done),
        "errors": [
            {"id": j["id"], "seed": j["seed"], "status": j["status"], "error": j["error"]}
            for j in jobs
            if j["status"] != "succeeded"
        ],
        "job_rows": [job_json(j) for j in jobs],
    }


def stage_means(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per stage of the report's timings (loading_seconds, gan_seconds, ...)
    over the jobs that have them: where a job's time went, at that phase's load."""
    per_stage: dict[str, list[float]] = {}
    for job in jobs:
        for stage, seconds in (job.get("timings") or {}).items():
            per_stage.setdefault(stage, []).append(seconds)
    return {stage: round(statistics.fmean(v), 3) for stage, v in per_stage.items()}


def job_json(job: dict[str, Any]) -> dict[str, Any]:
    out = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in job.items()}
    out["queued_s"] = _seconds(job["created_at"], job["started_at"])
    out["wall_s"] = _seconds(job["started_at"], job["finished_at"])
    return out


def _accuracy_cell(figure: dict[str, Any]) -> str:
    if figure["mean"] is None:
        return "n/a"
    return f"{figure['mean']:.3f}" + (f" ± {figure['sd']:.3f}" if figure["sd"] is not None else "")


def _memory_cell(memory: dict[str, dict[str, float]] | None) -> str:
    if not memory:
        return "n/a"
    return " ".join(
        f"{gpu}: {memory['baseline'].get(gpu, 0):.0f}→{peak:.0f}"
        for gpu, peak in sorted(memory["peak"].items())
    )


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def table(results: list[dict[str, Any]]) -> str:
    header = ["phase", "jobs ok", "failed", "jobs/hour", "span s", "p50 s", "p95 s", "max s",
              "worker start→success s", "GPU MiB base→peak", "GAN minority acc",
              "oversample minority acc"]  # fmt: skip
    rows = []
    for r in results:
        acc = r["minority_accuracy"]
        rows.append([
            r["phase"] + (" (timed out)" if r.get("timed_out") else ""),
            f"{r['succeeded']}/{r['jobs']}", r["failed"], _cell(r["jobs_per_hour"]),
            _cell(r["span_s"]), _cell(r["wall_s"]["p50"]), _cell(r["wall_s"]["p95"]),
            _cell(r["wall_s"]["max"]), _cell(r["worker_start_to_success_s"]) if r["phase"] == FIRST
            else "", _memory_cell(r["gpu_memory_mib"]), _accuracy_cell(acc["gan"]),
            _accuracy_cell(acc["oversample"]),
        ])  # fmt: skip
    return format_table(header, rows)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value}."""
    figures = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                figures[name] = float(value)
            except ValueError:
                continue
    return figures


def worker_figures(metrics: dict[str, float]) -> dict[str, Any]:
    """What `balancer worker --metrics-port` says: pool processes per warm-up state, the
    warm-up's seconds, the most GPU memory PyTorch's allocator held in one process."""
    states = {
        s: int(metrics.get(f'balancer_worker_warm_up{{state="{s}"}}', 0)) for s in WARM_UP_STATES
    }
    peak = metrics.get("balancer_worker_gpu_memory_peak_bytes")
    return {
        "warm_up": {s: n for s, n in states.items() if n},
        "warm_up_seconds": metrics.get("balancer_worker_warm_up_seconds"),
        "torch_gpu_memory_peak_mib": round(peak / 2**20, 1) if peak is not None else None,
    }


def warmed_up(figures: dict[str, Any]) -> bool:
    states = figures["warm_up"]
    return not states.get("running") and sum(states.values()) >= 1


class Bench:
    """The stack, its client and the worker's metrics address."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.args = args
        self.stack = EmbeddedStack(env, keep=args.keep, prefix="throughput-")
        try:
            self.client = self.stack.start_api(START_S)
        except BaseException:
            self.stack.close()
            raise
        self.metrics_port = free_port()
        self.worker_started_at: datetime | None = None

    def start_worker(self) -> None:
        self.worker_started_at = datetime.now(timezone.utc)
        self.stack.start("worker", ["worker", "--metrics-port", str(self.metrics_port)])

    def worker_alive(self) -> bool:
        return self.stack.check_alive("worker")  # SystemExit with the log once it died

    def wait_until_warm(self) -> None:
        log = lambda: "ready." in self.stack.log("worker")  # noqa: E731
        wait(lambda: log() or self.worker_alive(), "the worker", START_S)
        wait(lambda: warmed_up(self.worker_figures() or {"warm_up": {}}) or self.worker_alive(),
             "the worker's warm-up", START_S)  # fmt: skip

    def worker_figures(self) -> dict[str, Any] | None:
        try:
            resp = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10)
        except httpx.TransportError:
            return None
        return worker_figures(parse_metrics(resp.text)) if resp.status_code == 200 else None

    def submit(self, data: bytes, configs: list[dict[str, Any]]) -> list[str]:
        """Upload all at once from a thread pool; the job ids in the order of configs."""

        def one(config: dict[str, Any]) -> str:
            files = {"dataset": ("digits.zip", data, "application/zip")}
            resp = self.client.post("/v1/jobs", data={"config": json.dumps(config)}, files=files)
            if resp.status_code != 202:
                raise SystemExit(f"submit: {resp.status_code} {resp.text}")
            return resp.json()["id"]

        threads = max(1, min(self.args.upload_threads, len(configs)))
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(one, configs))

    def poll(
        self, ids: list[str], timeout_s: float, check: Callable[[], object]
    ) -> tuple[dict, bool]:
        """Until every job has ended: ({id: job resource}, False); on timeout the unfinished
        jobs are cancelled (DELETE) and (their last states, True) come back."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, dict[str, Any]] = {}
        while True:
            for job_id in [i for i in ids if last.get(i, {}).get("status") not in TERMINAL]:
                resp = self.client.get(f"/v1/jobs/{job_id}")
                resp.raise_for_status()
                last[job_id] = resp.json()
            if all(last[i]["status"] in TERMINAL for i in ids):
                return last, False
            check()
            if time.monotonic() > deadline:
                for job_id in ids:
                    if last[job_id]["status"] not in TERMINAL:
                        self.client.delete(f"/v1/jobs/{job_id}")
                        state = self.client.get(f"/v1/jobs/{job_id}").json()
                        was = last[job_id]["status"]
                        state["error"] = f"still {was} after the phase's {timeout_s:g} s; cancelled"
                        last[job_id] = state
                return last, True
            time.sleep(POLL_S)

    def job_row(self, job: dict[str, Any]) -> dict[str, Any]:
        row = {
            "id": job["id"],
            "seed": job["config"].get("seed"),
            "status": job["status"],
            "attempts": job.get("attempts"),
            "created_at": parse_time(job.get("created_at")),
            "started_at": parse_time(job.get("started_at")),
            "finished_at": parse_time(job.get("finished_at")),
            "error": job.get("error"),
            "minority_class": None,
            "minority_accuracy": None,
            "device": None,
            "pipeline_s": None,
            "timings": None,
        }
        if job["status"] == "succeeded":
            resp = self.client.get(f"/v1/jobs/{job['id']}/report")
            if resp.status_code == 200:
                report = resp.json()
                row["minority_class"] = minority_class(report)
                row["minority_accuracy"] = minority_accuracy(report)
                row["device"] = (report.get("environment") or {}).get("device")
                row["pipeline_s"] = (report.get("timings") or {}).get("total_seconds")
                row["timings"] = report.get("timings")
        return row

    def run_phase(self, phase: Phase, data: bytes, seeds: list[int]) -> dict[str, Any]:
        configs = [job_config(self.args, s) for s in seeds]
        if phase != FIRST and "worker" not in self.stack.procs:
            self.start_worker()
            self.wait_until_warm()
        with GpuMemory(GPU_SAMPLE_S) as gpu:
            if phase == FIRST:
                self.start_worker()
            ids = self.submit(data, configs)
            states, timed_out = self.poll(ids, self.args.timeout_s, self.worker_alive)
        memory = {"baseline": gpu.baseline, "peak": gpu.peak} if gpu.available else None
        jobs = [self.job_row(states[i]) for i in ids]
        started = self.worker_started_at if phase == FIRST else None
        summary = summarize_phase(str(phase), jobs, memory, started)
        summary["timed_out"] = timed_out
        summary["worker"] = self.worker_figures()
        return summary

    def close(self) -> None:
        self.client.close()
        self.stack.close()


def _sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through `finally`: the stack is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("throughput: interrupted; the stack was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    from pipeline.demo import write_digits_zip

    counts = {1: args.k, 2: args.majority, 3: args.majority}
    images, labels = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.zip"
        write_digits_zip(path, images, labels, counts, args.test_per_class, seed=DATASET_SEED)
        data = path.read_bytes()
    batches = [1 if p == FIRST else p for p in args.phase_list]
    env = {"BALANCER_OWNER_MAX_ACTIVE_JOBS": str(max(1000, 2 * max(batches)))}
    if args.gpu_jobs is not None:
        env["BALANCER_GPU_JOBS"] = str(args.gpu_jobs)
    smi = GpuMemory.sample() if GpuMemory().available else None
    notes = [] if smi is not None else ["nvidia-smi not found: GPU memory not measured"]
    passed = {k: v for k, v in os.environ.items() if k.startswith("BALANCER_")}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": git_commit(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "gpu_memory_before_mib": smi,
        "gpu_jobs": args.gpu_jobs,
        "phases": [str(p) for p in args.phase_list],
        "config": {**job_config(args, args.first_seed), "seed": "first_seed + job number"},
        "first_seed": args.first_seed,
        "dataset": {
            "train": counts,
            "test_per_class": args.test_per_class,
            "draw_seed": DATASET_SEED,
            "zip_bytes": len(data),
        },  # fmt: skip
        "stack": "embedded: SQLite, embedded broker, local files",
        "env": env | {k: v for k, v in passed.items() if k not in env},
        "notes": notes,
    }
    print(f"throughput: phases {args.phases}, BALANCER_GPU_JOBS={args.gpu_jobs or 'unset'}, "
          f"config {job_config(args, args.first_seed)}", flush=True)  # fmt: skip
    results: list[dict[str, Any]] = []
    seed = args.first_seed
    bench = None
    try:
        bench = Bench(args, env)
        for phase in args.phase_list:
            n = 1 if phase == FIRST else int(phase)
            summary = bench.run_phase(phase, data, list(range(seed, seed + n)))
            seed += n
            results.append(summary)
            for e in summary["errors"]:
                print(f"{phase}: job {e['id']} (seed {e['seed']}) {e['status']}: {e['error']}")
            brief = {k: summary[k] for k in ("phase", "succeeded", "failed", "jobs_per_hour")}
            print(json.dumps(brief | {"wall_s": summary["wall_s"]}), flush=True)
            if args.out:
                write(args.out, meta, results)
            if summary["timed_out"]:
                print(f"{phase}: timed out after {args.timeout_s} s; later phases not run")
                break
    finally:
        if bench is not None:
            bench.close()
    if args.out:
        write(args.out, meta, results)
    for note in notes:
        print(f"note: {note}")
    print(table(results))
    complete = len(results) == len(args.phase_list)
    return 0 if complete and all(r["failed"] == 0 for r in results) else 1


def write(path: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({**meta, "results": results}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
