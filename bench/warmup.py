"""A worker's first job with and without the start-up warm-up (pipeline/warmup.py).

Each case in a fresh process: (a) no warm-up: the standard seed-sized job cold, then warm;
(b) warm_up() first (what each worker process does when it starts), then the same job.

    python bench/warmup.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import format_table, load_digits  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402
from pipeline.warmup import warm_up  # noqa: E402


def child(with_warm_up: bool) -> dict:
    x, y = load_digits()
    out: dict = {"warm_up_seconds": warm_up() if with_warm_up else 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d.zip"
        write_digits_zip(data, x, y, {1: 10, 2: 300, 3: 300}, test_per_class=200, seed=0)
        for name in ("first_job_seconds", "second_job_seconds"):
            start = time.perf_counter()
            run_pipeline(data, Path(tmp) / name, RunConfig(preset="standard"))
            out[name] = time.perf_counter() - start
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2] == "1")))
        return
    rows = []
    for flag, label in (("0", "no warm-up"), ("1", "warm-up at start")):
        done = subprocess.run([sys.executable, __file__, "--child", flag], capture_output=True)
        r = json.loads(done.stdout.decode().strip().splitlines()[-1])
        rows.append([label] + [f"{r[k]:.2f}" for k in r])
    print(format_table(["worker", "warm-up s", "first job s", "second job s"], rows))


if __name__ == "__main__":
    main()
