"""Throughput with more workers: jobs per minute with 1, 2, 3 workers on the S3 backend (each
worker with a data folder of its own, as on separate hosts) against 1 worker on the local
backend (one shared folder, today's layout). Real processes: the API (uvicorn), `balancer
worker`s, PostgreSQL, Redis, and an S3 server (rclone, or SeaweedFS with --store seaweedfs).

    python bench/scale.py --json docs/results/scale_DATE_cpu2.json
    python bench/scale.py --jobs 3 --runs s3:1,s3:2      # a shorter run

Each run: start the API and N workers, wait until they are ready, submit --jobs jobs at once
(MNIST digits 1/2/3, 10/100/100 training images; the quick preset with small iteration
counts), and time from
the first upload to the last job's success. On a CPU-only machine the workers compete for the
same cores, so this measures the overhead of the storage backend and of coordination, not
how a GPU cluster scales.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import format_table  # noqa: E402
from bench.stack import api_ready, child_env, free_port, git_commit, spawn, wait  # noqa: E402
from cli.service_commands import stop_process  # noqa: E402

CONFIG = {"preset": "quick", "gan_iterations": 50, "epochs": 1, "seeds": 1}
# MNIST digits 1 / 2 / 3 with 10 / 100 / 100 training and 50 test images each.
COUNTS, TEST_PER_CLASS = {1: 10, 2: 100, 3: 100}, 50
ACCESS_KEY, SECRET_KEY, BUCKET = "bench", "bench-secret", "balancer"
START_S, JOB_S = 120, 1800


def start_s3(store: str, folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    binaries = Path(sys.executable).parent
    if store == "rclone":
        (folder / BUCKET).mkdir(parents=True)
        cmd = [str(binaries / "rclone"), "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
               "--addr", f"127.0.0.1:{port}", "--config", "/dev/null", str(folder)]  # fmt: skip
    else:
        config = folder / "s3.json"
        folder.mkdir(parents=True)
        creds = [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]
        config.write_text(json.dumps({"identities": [
            {"name": "bench", "credentials": creds, "actions": ["Admin", "Read", "Write", "List"]}
        ]}))  # fmt: skip
        names = (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        )
        cmd = [str(binaries / "weed"), "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", f"-s3.port={port}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false", f"-s3.config={config}", f"-bucket={BUCKET}",
               *(f"-{n}={free_port()}" for n in names)]  # fmt: skip
    log = (folder.parent / f"{store}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def database(admin_dsn: str) -> str:
    import psycopg

    name = f"balancer_bench_scale_{secrets.token_hex(3)}"
    with psycopg.connect(f"{admin_dsn}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{admin_dsn}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_once(args: argparse.Namespace, backend: str, workers: int, data: bytes) -> dict:
    root = Path(tempfile.mkdtemp(prefix=f"scale-{backend}{workers}-"))
    db = database(args.pg)
    queue = f"scale-{secrets.token_hex(3)}"
    env = child_env(
        {
            "BALANCER_DATABASE_URL": f"postgresql+psycopg://{args.pg.split('://', 1)[1]}/{db}",
            "BALANCER_BROKER_URL": args.redis,
            "BALANCER_QUEUE": queue,
            "BALANCER_WARM_UP": "false",
            "BALANCER_OWNER_MAX_ACTIVE_JOBS": "1000",
            "BALANCER_RESEND_QUEUED_AFTER_S": "3600",
            "BALANCER_DATA_DIR": str(root / "api"),
        }
    )
    procs: list[subprocess.Popen] = []
    s3 = None
    if backend == "s3":
        s3, endpoint = start_s3(args.store, root / "s3")
        env |= {"BALANCER_STORAGE_URL": f"s3://{BUCKET}/bench",
                "BALANCER_S3_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}  # fmt: skip
    try:
        cli = lambda *a: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "cli.main", *a], cwd=ROOT, env=env, check=True,
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        cli("db", "upgrade")
        if backend == "s3":
            wait(lambda: subprocess.run([sys.executable, "-m", "cli.main", "storage", "init"],
                                        cwd=ROOT, env=env, capture_output=True).returncode == 0,
                 "the S3 server", START_S)  # fmt: skip
        key = cli("keys", "create", "--name", "bench").strip().splitlines()[-1]
        port = free_port()
        api_cmd = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
                   "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        procs.append(spawn(api_cmd, env, root / "api.log"))
        logs = []
        for i in range(workers):
            # S3: a data folder per worker, as on separate hosts; local: the shared one.
            folder = root / f"worker-{i}" if backend == "s3" else root / "api"
            log = root / f"worker-{i}.log"
            cmd = [sys.executable, "-m", "cli.main", "worker"]
            procs.append(spawn(cmd, env | {"BALANCER_DATA_DIR": str(folder)}, log))
            logs.append(log)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                              headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        wait(lambda: all(log.exists() and "ready." in log.read_text() for log in logs),
             "the workers", START_S)  # fmt: skip
        wait(lambda: api_ready(client), "the API", START_S)

        started = time.monotonic()
        ids = []
        for _ in range(args.jobs):
            resp = client.post("/v1/jobs", files={"dataset": ("d.zip", data, "application/zip")},
                               data={"config": json.dumps(CONFIG)})  # fmt: skip
            resp.raise_for_status()
            ids.append(resp.json()["id"])
        done: dict[str, dict] = {}
        while len(done) < len(ids):
            if time.monotonic() - started > JOB_S:
                raise SystemExit("jobs took too long")
            for job_id in set(ids) - set(done):
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in {"succeeded", "failed", "canceled"}:
                    done[job_id] = job
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        failed = [j for j in done.values() if j["status"] != "succeeded"]
        if failed:
            raise SystemExit(f"{len(failed)} job(s) did not succeed: {failed[0]['error']}")
        return {
            "backend": backend if backend == "local" else f"s3 ({args.store})",
            "workers": workers,
            "jobs": args.jobs,
            "seconds": round(elapsed, 1),
            "jobs_per_minute": round(args.jobs / elapsed * 60, 2),
        }
    finally:
        for proc in reversed(procs):
            stop_process(proc, grace_s=10)
        if s3:
            s3.kill()
            s3.wait()
        drop_database(args.pg, db)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs per run (default 4)")
    parser.add_argument("--runs", default="local:1,s3:1,s3:2,s3:3", help="backend:workers,...")
    parser.add_argument("--store", choices=["rclone", "seaweedfs"], default="rclone")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from pipeline.demo import load_mnist_5k, write_digits_zip

    with tempfile.TemporaryDirectory() as tmp:
        images, labels = load_mnist_5k()
        write_digits_zip(Path(tmp) / "d.zip", images, labels, COUNTS, TEST_PER_CLASS, seed=0)
        data = (Path(tmp) / "d.zip").read_bytes()
    results = []
    for run in args.runs.split(","):
        backend, workers = run.split(":")
        result = run_once(args, backend, int(workers), data)
        print(json.dumps(result), flush=True)
        results.append(result)
    header = ["backend", "workers", "jobs", "seconds", "jobs/min"]
    rows = [[r["backend"], r["workers"], r["jobs"], r["seconds"], r["jobs_per_minute"]]
            for r in results]  # fmt: skip
    print(format_table(header, rows))
    if args.json:
        commit = git_commit()
        meta = {"date": time.strftime("%Y-%m-%d"), "commit": commit, "config": CONFIG,
                "dataset": {"train": COUNTS, "test_per_class": TEST_PER_CLASS},
                "cpus": os.cpu_count(), "machine": platform.platform()}  # fmt: skip
        args.json.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
