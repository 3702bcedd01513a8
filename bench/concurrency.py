"""Jobs at once in one process: how many standard seed-sized jobs an hour one GPU finishes
when a process runs N of them at once as threads (each on its own CUDA stream lane, output
files written by an OutputPool), as a worker with BALANCER_GPU_JOBS=N does, without the
service around it. The figures that chose worker/pool.py's DEFAULT_GPU_JOBS; the service
itself is measured by bench/throughput.py.

    python bench/concurrency.py --threads 1 4 8 16 --jobs-per-thread 3 --out $OUT/conc.json

Each N: one warm-up round (N jobs at once), then N threads each run --jobs-per-thread jobs
back to back (draw = seed of each job, so no two jobs are the same). Reports jobs per hour
(all jobs / wall time), p50 / p95 job seconds, peak GPU memory and the GAN and oversample
methods' minority accuracy (digit 1) over the jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import format_table, load_digits, parse_set  # noqa: E402
from pipeline import engine  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.output_pool import OutputPool  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--jobs-per-thread", type=int, default=3)
    ap.add_argument("--k", type=int, default=10, help="training images of the minority digit")
    ap.add_argument("--writers", type=int, default=8, help="OutputPool processes")
    ap.add_argument("--set", action="append", default=[], help="RunConfig KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--switch-interval", type=float, default=None, help="probe: GIL, seconds")
    ap.add_argument("--spin-waits", action="store_true", help="Stream.synchronize (spinning)")
    args = ap.parse_args()
    engine.BLOCKING_WAITS = not args.spin_waits
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    options = dict(parse_set(item) for item in args.set)
    x, y = load_digits()
    pool = OutputPool(args.writers)
    pool.warm_up()
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        zips = [Path(tmp) / f"d{d}.zip" for d in range(max(args.threads) * args.jobs_per_thread)]
        for d, z in enumerate(zips):
            write_digits_zip(z, x, y, {1: args.k, 2: 300, 3: 300}, 200, seed=d)
        for n in args.threads:
            result = measure(n, args.jobs_per_thread, zips, options, pool, Path(tmp))
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "jobs"}), flush=True)
            rows.append(
                [
                    n,
                    len(result["jobs"]),
                    f"{result['jobs_per_hour']:.0f}",
                    f"{result['p50_s']:.2f}",
                    f"{result['p95_s']:.2f}",
                    f"{result['peak_mib']:.0f}",
                    f"{result['process_cores']:.2f}",
                    result["gan_minority"],
                    result["oversample_minority"],
                ]
            )
    pool.close()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if args.out:
        args.out.write_text(json.dumps({"device": device, "results": results}, indent=2))
    head = ["jobs at once", "jobs", "jobs/h", "p50 s", "p95 s", "peak MiB", "CPU cores"]
    head += ["gan min.", "over. min."]
    print(f"\n{device}, k = {args.k}\n" + format_table(head, rows))


def measure(
    n: int, per_thread: int, zips: list[Path], options: dict, pool: OutputPool, tmp: Path
) -> dict:
    def job(i: int) -> dict:
        cfg = RunConfig.from_dict({**options, "seed": i})
        t = time.perf_counter()
        report = run_pipeline(zips[i], tmp / f"n{n}-{i}", cfg, outputs=pool)
        return {
            "seconds": time.perf_counter() - t,
            "timings": report["timings"],
            "gan": report["methods"]["gan"]["per_class"]["1"]["accuracy"],
            "oversample": report["methods"]["oversample"]["per_class"]["1"]["accuracy"],
            "generator": report["gan"].get("1", {}).get("generator"),
        }

    def thread(t: int) -> list[dict]:
        return [job(t * per_thread + j) for j in range(per_thread)]

    with ThreadPoolExecutor(n) as ex:  # warm-up round: lanes, captures, cuDNN choices
        list(ex.map(job, range(n)))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(n) as ex:
        jobs = [j for batch in ex.map(thread, range(n)) for j in batch]
    wall = time.perf_counter() - start
    cores = (time.process_time() - cpu) / wall  # CPU seconds of this process per second
    seconds = sorted(j["seconds"] for j in jobs)
    peak = torch.cuda.max_memory_reserved() / 2**20 if torch.cuda.is_available() else 0.0
    return {
        "jobs_at_once": n,
        "wall_s": wall,
        "jobs_per_hour": len(jobs) / wall * 3600,
        "p50_s": statistics.median(seconds),
        "p95_s": float(np.percentile(seconds, 95)),
        "peak_mib": peak,
        "process_cores": cores,
        "gan_minority": _mean_sd([j["gan"] for j in jobs]),
        "oversample_minority": _mean_sd([j["oversample"] for j in jobs]),
        "jobs": jobs,
    }


def _mean_sd(v: list[float]) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"


if __name__ == "__main__":
    main()
