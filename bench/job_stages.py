"""Where one seed-sized job's time goes: the pipeline's timings and the proxy test's stages.

    python bench/job_stages.py --jobs 3 --k 1 [--set KEY=VALUE ...]

Runs the seed protocol's dataset (MNIST 1/2/3, k images of 1, 300 of 2 and 3) through
run_pipeline one job at a time (the first is the cold one) and prints, per job, the report's
timings and the proxy test's stage seconds (gan.<class>.selection_stage_seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import load_digits, parse_set  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    options = {"device": args.device, **dict(parse_set(o) for o in args.options)}
    x, y = load_digits()
    for job in range(args.jobs):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "data.zip"
            write_digits_zip(path, x, y, {1: args.k, 2: 300, 3: 300}, 200, seed=job)
            t = time.perf_counter()
            report = run_pipeline(path, None, RunConfig.from_dict({**options, "seed": job}))
            wall = time.perf_counter() - t
        gan = report["gan"].get("1", {})
        row = {
            "job": job,
            "wall_s": round(wall, 2),
            "timings": {k: round(v, 2) for k, v in report["timings"].items()},
            "stages": gan.get("selection_stage_seconds"),
            "chosen": [gan.get("generator"), gan.get("selection", {}).get("share")],
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
