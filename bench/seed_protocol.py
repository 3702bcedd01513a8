"""The seed protocol: MNIST 1/2/3, 300 training images of 2 and 3, k of 1, 200 test each.

For each k and each run seed, builds the dataset zip (a different draw per seed), runs the
pipeline, and collects minority (digit 1) accuracy and balanced accuracy per method. Prints
mean +- sd over run seeds, as a markdown table, last.

    python bench/seed_protocol.py --k 1 10 30 --runs 3 [--preset standard] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import format_table, load_digits  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.evaluation import METHODS  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--runs", type=int, default=3, help="run seeds (data draw, GAN, classifiers)")
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gan-iterations", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seeds", type=int, help="classifier seeds per run")
    ap.add_argument("--json", type=Path, help="write every run's figures here")
    args = ap.parse_args()
    x, y = load_digits()
    results = []
    for k in args.k:
        for run in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                zip_path = Path(tmp) / "data.zip"
                write_digits_zip(
                    zip_path, x, y, {1: k, 2: 300, 3: 300}, test_per_class=200, seed=run
                )
                cfg = RunConfig(
                    preset=args.preset,
                    device=args.device,
                    seed=run,
                    gan_iterations=args.gan_iterations,
                    epochs=args.epochs,
                    seeds=args.seeds,
                )
                t = time.perf_counter()
                report = run_pipeline(zip_path, Path(tmp) / "out", cfg)
                seconds = time.perf_counter() - t
            row = {
                "k": k,
                "run": run,
                "seconds": seconds,
                "device": report["environment"]["device"],
            }
            for m in METHODS:
                row[m] = {
                    "minority": report["methods"][m]["per_class"]["1"]["accuracy"],
                    "balanced": report["methods"][m]["balanced_accuracy"],
                }
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(summary_table(results))


def summary_table(results: list[dict]) -> str:
    header = ["k", "runs"] + [f"{m} minority" for m in METHODS] + [f"{m} balanced" for m in METHODS]
    header.append("s/job")
    rows = []
    for k in sorted({r["k"] for r in results}):
        rs = [r for r in results if r["k"] == k]
        cells = [str(k), str(len(rs))]
        for key in ("minority", "balanced"):
            for m in METHODS:
                v = np.array([r[m][key] for r in rs])
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        cells.append(f"{np.mean([r['seconds'] for r in rs]):.1f}")
        rows.append(cells)
    return format_table(header, rows)


if __name__ == "__main__":
    main()
