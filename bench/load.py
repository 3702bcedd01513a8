"""Load test on loopback: a real `balancer serve` (API + one worker, SQLite and the embedded
broker, the default install) takes many concurrent status polls, uploads and event streams
while one job trains.

    python bench/load.py                    # 200 pollers x 10 polls, 20 concurrent uploads
    python bench/load.py --uploads 0        # the issue's scenario: polls only, one job training
    python bench/load.py --pollers 0 --uploads 0 --sse 500 --sse-hold-s 30   # 500 open streams
    python bench/load.py --pollers 50 --polls 4 --uploads 5 --json out.json

First one long job is started and the run waits until the worker trains it (its GAN stage);
every poller then polls that job's status back to back, and all uploaders send a small dataset
at the same moment. The run records whether the job was still training when the polls ended.
An error is any answer other than the expected one (200 for a poll, 202 for an upload) or a
transport failure. With --sse N, N event streams of the training job are opened at once and
held for --sse-hold-s seconds while one probe client polls the job's status; a stream that
is refused, fails, or closes before the hold ends is an error. The jobs are cancelled at the
end. The per-owner active-job limit is raised for the run: 20 uploads at once from one key
would otherwise meet its 429 by design.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import format_table  # noqa: E402
from cli.service_commands import stop_process  # noqa: E402

TINY = {"preset": "quick", "gan_iterations": 1, "epochs": 1, "seeds": 1, "gan_width": 8}
# The job that trains while the load runs: far more GAN steps than any run lasts (it is
# cancelled at the end), small batches, progress written to the database every 2 steps (the
# worker's writes meet the API's reads, as with any job followed live).
TRAINING = {**TINY, "gan_iterations": 1_000_000, "gan_batch": 8, "progress_every": 2}
TRAINING_STAGE_TIMEOUT_S = 180


@dataclass
class Sample:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies)
        pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
        return {
            "requests": len(lat) + len(self.errors),
            "errors": len(self.errors),
            "p50_ms": round(pct(0.50), 1),
            "p95_ms": round(pct(0.95), 1),
            "p99_ms": round(pct(0.99), 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else float("nan"),
            "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else float("nan"),
        }


def dataset_zip(seed: int = 0) -> bytes:
    """Two classes of 16x16 noise with a shape; a few KB."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, n in (("circle", 10), ("square", 6)):
            for i in range(n):
                img = rng.integers(0, 60, (16, 16)).astype(np.uint8)
                img[4:12, 4:12] = 230 if cls == "square" else img[4:12, 4:12]
                png = io.BytesIO()
                Image.fromarray(img, "L").save(png, "PNG")
                zf.writestr(f"{cls}/{i:03d}.png", png.getvalue())
    return buf.getvalue()


def balancer(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def start_serve(
    data_dir: Path, port: int, extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env |= {
        "BALANCER_DATA_DIR": str(data_dir),
        "BALANCER_OWNER_MAX_ACTIVE_JOBS": "1000",
        "PYTHONPATH": str(ROOT),
        **(extra or {}),
    }
    balancer(env, "db", "upgrade")
    key = balancer(env, "keys", "create", "--name", "load").splitlines()[-1]
    log = (data_dir / "serve.log").open("w")
    cmd = [sys.executable, "-m", "cli.main", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited:\n{(data_dir / 'serve.log').read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc, key, env
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("serve did not become ready within 120 s")


async def timed(sample: Sample, expected: int, request) -> httpx.Response | None:  # noqa: ANN001
    t = time.perf_counter()
    try:
        resp = await request()
    except httpx.HTTPError as exc:
        sample.errors.append(f"{type(exc).__name__}: {exc}")
        return None
    took = time.perf_counter() - t
    if resp.status_code != expected:
        sample.errors.append(f"{resp.status_code}: {resp.text[:200]}")
        return resp
    sample.latencies.append(took)
    return resp


async def poller(client: httpx.AsyncClient, job_id: str, polls: int, sample: Sample) -> None:
    for _ in range(polls):
        await timed(sample, 200, lambda: client.get(f"/v1/jobs/{job_id}"))


async def uploader(client: httpx.AsyncClient, data: bytes, sample: Sample, ids: list[str]) -> None:
    files = {"dataset": ("load.zip", data, "application/zip")}
    form = {"config": json.dumps(TINY)}
    resp = await timed(sample, 202, lambda: client.post("/v1/jobs", files=files, data=form))
    if resp is not None and resp.status_code == 202:
        ids.append(resp.json()["id"])


async def run_load(base_url: str, key: str, args: argparse.Namespace) -> dict:
    data = dataset_zip()
    # Idle connections are dropped after 2 s, before uvicorn's 5 s keep-alive timeout: with
    # httpx's default (also 5 s) a request now and then went out on a connection the server
    # was closing at that moment (RemoteProtocolError), a client-side race, not a server error.
    connections = args.pollers + args.uploads + args.sse + 10
    limits = httpx.Limits(max_connections=connections, keepalive_expiry=2.0)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=120
    ) as client:
        seed = await client.post(
            "/v1/jobs",
            files={"dataset": ("seed.zip", data, "application/zip")},
            data={"config": json.dumps(TRAINING)},
        )
        seed.raise_for_status()
        seed_id = seed.json()["id"]
        training_wait_s = await wait_training(client, seed_id)
        polls, uploads, ids = Sample(), Sample(), [seed_id]
        cpu_before = cpu_seconds(args.data_dir)
        started = time.perf_counter()
        await asyncio.gather(
            *(poller(client, seed_id, args.polls, polls) for _ in range(args.pollers)),
            *(uploader(client, data, uploads, ids) for _ in range(args.uploads)),
        )
        wall = time.perf_counter() - started
        cpu_after = cpu_seconds(args.data_dir)
        after_polls = (await client.get(f"/v1/jobs/{seed_id}")).json()
        sse = await hold_streams(client, seed_id, args) if args.sse else None
        after_all = (await client.get(f"/v1/jobs/{seed_id}")).json()
        cleanup = Sample()
        for job_id in ids:  # cancel (queued/running) or delete (finished): 200, 202 or 204
            resp = await client.delete(f"/v1/jobs/{job_id}")
            if resp.status_code not in (200, 202, 204):
                cleanup.errors.append(f"{resp.status_code}: {resp.text[:200]}")
        await wait_idle(client)
    result = {
        "polls": polls.summary(),
        "uploads": uploads.summary(),
        "wall_s": round(wall, 2),
        "polls_per_s": round(len(polls.latencies) / wall, 1) if polls.latencies else 0.0,
        # CPU cores used during the polls, by process role (user + system time / wall time)
        "cpu_cores_during_polls": {
            role: round((cpu_after[role] - cpu_before.get(role, 0.0)) / wall, 2)
            for role in cpu_after
            if polls.latencies
        },
        "training_job": {
            "waited_for_training_s": round(training_wait_s, 1),
            "after_polls": {k: after_polls.get(k) for k in ("status", "stage", "progress")},
            "at_end": {k: after_all.get(k) for k in ("status", "stage", "progress")},
        },
        "cleanup_errors": len(cleanup.errors),
        "error_samples": (polls.errors + uploads.errors + cleanup.errors)[:10],
    }
    if sse is not None:
        result["sse"] = sse
        result["error_samples"] += sse.pop("error_samples")
    return result


async def wait_training(client: httpx.AsyncClient, job_id: str) -> float:
    """Seconds until the job is in its GAN stage: the load then meets a training worker."""
    started = time.monotonic()
    while time.monotonic() - started < TRAINING_STAGE_TIMEOUT_S:
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] != "queued" and job["status"] != "running":
            raise SystemExit(f"the training job ended before the load: {job}")
        if job["status"] == "running" and str(job.get("stage")).startswith("training_gan"):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise SystemExit(f"the job did not start training within {TRAINING_STAGE_TIMEOUT_S} s")


async def hold_streams(client: httpx.AsyncClient, job_id: str, args: argparse.Namespace) -> dict:
    """Open args.sse event streams of the (training) job at once, hold them args.sse_hold_s
    seconds, and poll the job's status meanwhile; every stream must stay open throughout."""
    opened = asyncio.Event()
    counts = {"open": 0, "events": 0, "keepalives": 0}
    errors: list[str] = []
    open_times: list[float] = []

    async def stream() -> None:
        t = time.perf_counter()
        try:
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as resp:
                if resp.status_code != 200:
                    errors.append(f"{resp.status_code}: {(await resp.aread())[:200]!r}")
                    return
                first = True
                async for line in resp.aiter_lines():
                    if line.startswith("event:"):
                        counts["events"] += 1
                        if line.startswith("event: end"):
                            errors.append("the stream ended before the hold did")
                            return
                        if first:
                            first = False
                            open_times.append(time.perf_counter() - t)
                            counts["open"] += 1
                            if counts["open"] == args.sse:
                                opened.set()
                    elif line.startswith(":"):
                        counts["keepalives"] += 1
            errors.append("the server closed the stream before the hold ended")
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    probes = Sample()

    async def probe(until: float) -> None:
        while time.monotonic() < until:
            await timed(probes, 200, lambda: client.get(f"/v1/jobs/{job_id}"))
            await asyncio.sleep(0.2)

    started = time.monotonic()
    tasks = [asyncio.create_task(stream()) for _ in range(args.sse)]
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(opened.wait(), timeout=120)
    all_open_s = time.monotonic() - started
    held_at_start = counts["open"]
    await probe(time.monotonic() + args.sse_hold_s)
    still_open = sum(not t.done() for t in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(open_times)
    return {
        "streams": args.sse,
        "opened": held_at_start,
        "open_after_hold": still_open,
        "errors": len(errors),
        "seconds_to_open_all": round(all_open_s, 2),
        "open_p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "open_max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "hold_s": args.sse_hold_s,
        "events": counts["events"],
        "keepalives": counts["keepalives"],
        "probe_polls": probes.summary(),
        "error_samples": (errors + probes.errors)[:10],
    }


async def wait_idle(client: httpx.AsyncClient, timeout_s: float = 120) -> None:
    """Until no job runs: the worker then stops at once when serve stops it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = (await client.get("/v1/jobs", params={"limit": 100})).json()["items"]
        if all(j["status"] not in ("queued", "running") for j in jobs):
            return
        await asyncio.sleep(0.5)


def stop_serve(proc: subprocess.Popen, data_dir: Path) -> None:
    """Stop serve (which stops its worker), then end any process of this run still alive:
    serve starts its worker in a session of its own, so a serve that died early leaves it."""
    stop_process(proc, grace_s=60)
    for pid in _processes_using(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cpu_seconds(data_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) so far of this client, the API processes and the worker
    processes of this run (Linux /proc; a process that ended meanwhile is not counted)."""
    tick = os.sysconf("SC_CLK_TCK")
    usage = os.times()
    found = {"client": usage.user + usage.system, "api": 0.0, "worker": 0.0}
    for pid in _processes_using(data_dir):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            role = "worker" if b"worker" in cmdline or b"celery" in cmdline else "api"
            found[role] += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
    return found


def _processes_using(data_dir: Path) -> list[int]:
    """Processes whose BALANCER_DATA_DIR is this run's temporary folder (Linux /proc)."""
    marker = f"BALANCER_DATA_DIR={data_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
    return found


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    return done.stdout.decode().strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pollers", type=int, default=200, help="concurrent status pollers")
    parser.add_argument("--polls", type=int, default=10, help="polls per poller")
    parser.add_argument("--uploads", type=int, default=20, help="concurrent uploads")
    parser.add_argument("--sse", type=int, default=0, help="event streams held open at once")
    parser.add_argument("--sse-hold-s", type=float, default=30.0, help="how long to hold them")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="BALANCER_X=V",
        help="a setting for serve (repeatable); none: the defaults, as installed",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--serve-log", type=Path, help="keep serve's log (API and worker) here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="balancer-load-") as tmp:
        extra = dict(item.split("=", 1) for item in args.serve_env)
        args.data_dir = Path(tmp)
        proc, key, _ = start_serve(Path(tmp), args.port, extra)
        try:
            result = asyncio.run(run_load(f"http://127.0.0.1:{args.port}", key, args))
        finally:
            stop_serve(proc, Path(tmp))
            if args.serve_log:
                shutil.copy(Path(tmp) / "serve.log", args.serve_log)
    result |= {
        "pollers": args.pollers,
        "polls_each": args.polls,
        "concurrent_uploads": args.uploads,
        "stack": "balancer serve: uvicorn + 1 Celery worker, SQLite, embedded broker",
        "serve_env": dict(item.split("=", 1) for item in args.serve_env),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "python": platform.python_version(),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
    }
    keys = ("requests", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    rows = [[kind, *(str(result[kind][k]) for k in keys)] for kind in ("polls", "uploads")]
    header = ["kind", "requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"]
    print(format_table(header, rows))
    wall, rate, cleanup = result["wall_s"], result["polls_per_s"], result["cleanup_errors"]
    print(f"wall {wall} s, {rate} polls/s; cleanup errors: {cleanup}")
    print("CPU cores during the polls:", json.dumps(result["cpu_cores_during_polls"]))
    if result["error_samples"]:
        print("errors:", *result["error_samples"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if "sse" in result:
        sse = result["sse"]
        print(
            f"sse: {sse['opened']}/{sse['streams']} streams opened in "
            f"{sse['seconds_to_open_all']} s, {sse['open_after_hold']} open after "
            f"{sse['hold_s']} s, {sse['errors']} errors; probe polls meanwhile: "
            f"p50 {sse['probe_polls']['p50_ms']} ms, p95 {sse['probe_polls']['p95_ms']} ms"
        )
    print("training job:", json.dumps(result["training_job"]))
    errors = result["polls"]["errors"] + result["uploads"]["errors"] + result["cleanup_errors"]
    if "sse" in result:
        errors += result["sse"]["errors"] + result["sse"]["probe_polls"]["errors"]
        errors += result["sse"]["streams"] - result["sse"]["open_after_hold"]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
