"""Time to write a seed-sized job's output files (balanced.zip, samples.png, report.html with
its five charts, report.json): in the job's own thread, as a one-job worker does, against an
OutputPool of --processes writers, which draws the charts side by side.

    python bench/output_time.py --processes 4 --repeats 3

The job itself runs once first (quick preset, a few iterations: the figures in the report do
not change what the charts cost to draw); only the writing is timed, warm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pipeline.run as run  # noqa: E402
from bench.common import format_table, load_digits  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.output_pool import OutputPool  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "data.zip"
        write_digits_zip(zip_path, x, y, {1: args.k, 2: 300, 3: 300}, 200, seed=0)
        files = job_outputs(zip_path, Path(tmp))
        pool = OutputPool(args.processes)
        pool.warm_up()
        rows = []
        for name, write in [
            ("in the job's thread", lambda out: run.write_outputs(out, *files)),
            (f"OutputPool({args.processes})", lambda out: pool.write(out, *files)),
        ]:
            write(Path(tmp) / "warm")  # imports, font cache
            seconds = []
            for i in range(args.repeats):
                t = time.perf_counter()
                write(Path(tmp) / f"{len(rows)}-{i}")
                seconds.append(time.perf_counter() - t)
            rows.append([name, f"{statistics.median(seconds):.3f}", f"{min(seconds):.3f}"])
        pool.close()
    print(format_table(["writer", "median s", "best s"], rows))


def job_outputs(zip_path: Path, tmp: Path, cfg: RunConfig | None = None) -> tuple:
    """Run the job (its files in tmp/job) and return the arguments run_pipeline handed
    write_outputs after out_dir, caught on the way. Default cfg: quick, a few iterations."""
    cfg = cfg or RunConfig(preset="quick", gan_iterations=30, epochs=1, seeds=3, device="cpu")
    caught = {}
    original = run.write_outputs

    def catch(out_dir: Path, *rest: object) -> dict[str, float]:
        caught["rest"] = rest
        return original(out_dir, *rest)

    run.write_outputs = catch
    try:
        run.run_pipeline(zip_path, tmp / "job", cfg)
    finally:
        run.write_outputs = original
    return caught["rest"]


if __name__ == "__main__":
    main()
