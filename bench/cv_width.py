"""Holdout against cross-validation: how much narrower the minority class's intervals get.

A flat zip (no test/ folder): digit 1 with k images against the common digits (--data
digits8: scikit-learn's 8x8 digits upscaled to 28 px, 90 each of 2, 3 and 7; --data mnist: the
5,000 MNIST digits, 300 each of 2 and 3 as in the seed protocol, or with --ten-classes 100 of
every other digit), the same zip evaluated twice, with
`evaluation holdout` (20 % of each class held out) and `evaluation cross-validation` (every
image tested once). Prints, per k: the minority class's test images, the width of its
per-class accuracy interval (gan) and of the gan − oversample interval, the verdict, and the
job's wall time.

    python bench/cv_width.py --k 5 10 20 --device cpu --set KEY=VALUE ... --json OUT.json
    python bench/cv_width.py --data mnist --k 5 20 --device cuda --json OUT.json
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
from bench.common import format_table, load_digits, load_sklearn_digits, parse_set  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.packaging import to_pil  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def flat_zip(path: Path, x: np.ndarray, y: np.ndarray, counts: dict[int, int], seed: int) -> None:
    import io
    import zipfile

    import torch

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for c, n in counts.items():
            for i, j in enumerate(rng.choice(np.flatnonzero(y == c), n, replace=False)):
                buf = io.BytesIO()
                to_pil(torch.from_numpy(x[j][None])).save(buf, "PNG")
                zf.writestr(f"{c}/{i:03d}.png", buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--draw", type=int, default=0)
    ap.add_argument("--data", choices=("digits8", "mnist"), default="digits8")
    ap.add_argument("--ten-classes", action="store_true", help="every digit; 1 is the minority")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    options = {"device": args.device, **dict(parse_set(o) for o in args.options)}
    x, y = load_sklearn_digits() if args.data == "digits8" else load_digits()
    common = {"digits8": 90, "mnist": 300}[args.data] if not args.ten_classes else 100
    others = range(10) if args.ten_classes else {"digits8": (2, 3, 7), "mnist": (2, 3)}[args.data]
    rows = []
    for k in args.k:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "digits.zip"
            counts = {c: common for c in others if c != 1}
            flat_zip(path, x, y, {1: k, **counts}, args.draw)
            for evaluation in ("holdout", "cross-validation"):
                cfg = RunConfig.from_dict({**options, "seed": args.draw, "evaluation": evaluation})
                t = time.perf_counter()
                report = run_pipeline(path, None, cfg)
                wall = time.perf_counter() - t
                name = "1"
                acc = report["methods"]["gan"]["per_class"][name]["accuracy_ci95"]
                comp = report["comparisons"][name]["gan_vs_oversample"]
                rows.append(
                    {
                        "data": args.data + (" 10 classes" if args.ten_classes else ""),
                        "k": k,
                        "evaluation": evaluation,
                        "test_images": report["comparisons"][name]["test_count"],
                        "accuracy_ci95_width": round(acc[1] - acc[0], 3),
                        "diff_ci95_width": round(
                            comp["difference_ci95"][1] - comp["difference_ci95"][0], 3
                        ),
                        "verdict": comp["verdict"],
                        "seconds": round(wall, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"options": options, "rows": rows}, indent=1))
    header = list(rows[0])
    print(format_table(header, [[str(r[h]) for h in header] for r in rows]))


if __name__ == "__main__":
    main()
