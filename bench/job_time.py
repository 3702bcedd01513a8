"""Warm single-job wall time per generator: the standard seed-sized job (MNIST 1/2/3,
k/300/300 training, 200 test each), run `--repeats` times in one process after one warm-up
job; prints each job's stage timings (report.json's `timings`, outputs written).

    python bench/job_time.py --generators per-class transfer --k 10 --repeats 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import load_digits  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generators", nargs="+", default=["per-class", "transfer"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    x, y = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "data.zip"
        write_digits_zip(zip_path, x, y, {1: args.k, 2: 300, 3: 300}, 200, seed=0)
        for gen in args.generators:
            cfg = RunConfig(generator=gen, device=args.device)
            run_pipeline(zip_path, Path(tmp) / "warm", cfg)  # warm-up: CUDA, cuDNN, captures
            for i in range(args.repeats):
                t = time.perf_counter()
                report = run_pipeline(zip_path, Path(tmp) / f"out{i}", cfg)
                wall = time.perf_counter() - t
                stages = {k: round(v, 2) for k, v in report["timings"].items()}
                print(f"{gen} k={args.k} job {i}: {wall:.2f} s wall; {stages}", flush=True)


if __name__ == "__main__":
    main()
