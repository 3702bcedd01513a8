"""Does the GAN beat oversampling? k minority images, many draws, paired differences.

Datasets (--dataset):
  mnist    the seed protocol: MNIST digits 1/2/3 (mnist5k.npz), 300 training images each of 2
           and 3, k of 1, 200 test images per class.
  digits8  scikit-learn's bundled 8x8 handwritten digits (UCI, no download), upscaled to 28 px:
           digits 1/2/3/7, 90 training images each of 2, 3 and 7, k of 1, 80 test per class.
  photos   RGB: non-overlapping 24x24 tiles of three photos shipped in packages (scikit-learn's
           china.jpg and flower.jpg, matplotlib's grace_hopper.jpg): which photo is a tile
           from? 200 training tiles of china and grace_hopper, k of flower, 150 test each.

One draw = one seed d: a different draw of the k minority (and majority) training images and
of the test images, the GAN seed and the classifier seeds. Within a draw the test images and
the majority training images are the same for every k, and the k minority images of a smaller
k are a subset of those of a larger one. Every method's classifier is trained with the same
augmentation policy (--classifier-augment), so baseline / oversample / gan differ only in
their training data.

Per k it prints mean ± sd over draws of each method's minority accuracy (recall), minority
precision and balanced accuracy, and the paired difference GAN − oversample (and GAN −
baseline) with a 95 % t-interval over draws.

    python bench/seed_protocol.py --draws 10 --k 1 3 10 30 --classifier-augment auto \\
        --device cuda --json OUT.json

--json is written after every job, and an existing file made with the same settings is
resumed (its finished (k, draw) jobs are skipped), so a run cut short can be continued.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import (  # noqa: E402
    format_table,
    load_digits,
    load_photo_tiles,
    load_sklearn_digits,
    parse_set,
)
from pipeline.augment import POLICIES  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.evaluation import METHODS  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402

LEVEL = 0.95


@dataclass(frozen=True)
class Protocol:
    load: object  # () -> (images uint8 [N, H, W], labels [N])
    minority: int
    majority: dict[int, int]  # class -> training images
    test_per_class: int


PROTOCOLS = {
    "mnist": Protocol(load_digits, minority=1, majority={2: 300, 3: 300}, test_per_class=200),
    "digits8": Protocol(
        load_sklearn_digits, minority=1, majority={2: 90, 3: 90, 7: 90}, test_per_class=80
    ),
    "photos": Protocol(load_photo_tiles, minority=1, majority={0: 200, 2: 200}, test_per_class=150),
}
# (figure name in a row, heading): minority figures are of the minority class
FIGURES = (
    ("minority", "minority accuracy"),
    ("minority_precision", "minority precision"),
    ("balanced", "balanced accuracy"),
)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", choices=sorted(PROTOCOLS), default="mnist")
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 10, 30])
    ap.add_argument(
        "--draws",
        "--runs",
        dest="draws",
        type=int,
        default=10,
        help="draws of the data and all seeds, per k (--runs: the old name)",
    )
    ap.add_argument("--classifier-augment", choices=POLICIES, default="auto")
    ap.add_argument("--generator", help="RunConfig's generator option, where it has one")
    ap.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other RunConfig option (VALUE read as JSON, else as text); repeatable",
    )
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gan-iterations", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seeds", type=int, help="classifier seeds per method, per draw")
    ap.add_argument("--json", type=Path, help="write (and resume) every job's figures here")
    ap.add_argument("--commit", help="commit to record (default: git rev-parse HEAD, if any)")
    args = ap.parse_args(argv)

    options = config_options(args, ap)
    protocol = PROTOCOLS[args.dataset]
    settings = {"dataset": args.dataset, "options": options}
    rows = resumed_rows(args.json, settings, ap)
    done = {(r["k"], r["draw"]) for r in rows}
    x, y = protocol.load()
    for k in args.k:
        for draw in range(args.draws):
            if (k, draw) in done:
                continue
            rows.append(run_one(protocol, x, y, k, draw, options))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:
                write_json(args.json, settings, rows, args.commit or _commit())
    chosen = [r for r in rows if r["k"] in args.k and r["draw"] < args.draws]
    print(f"\n{args.dataset}, {options}")
    print(summary_tables(chosen))


def config_options(args: argparse.Namespace, ap: argparse.ArgumentParser) -> dict:
    """The RunConfig options every job of this run shares (seed and device aside)."""
    options = {
        "preset": args.preset,
        "classifier_augment": args.classifier_augment,
        "gan_iterations": args.gan_iterations,
        "epochs": args.epochs,
        "seeds": args.seeds,
    }
    options = {k: v for k, v in options.items() if v is not None}
    extra = list(args.options)
    if args.generator is not None:
        extra.append(f"generator={args.generator}")
    known = {f.name for f in fields(RunConfig)}
    for item in extra:
        try:
            key, value = parse_set(item)
        except ValueError:
            ap.error(f"--set wants KEY=VALUE, got {item!r}")
        if key not in known:
            ap.error(f"RunConfig has no option {key!r} on this commit")
        options[key] = value
    try:
        RunConfig.from_dict({**options, "device": args.device})
    except (ValueError, TypeError) as exc:
        ap.error(str(exc))
    return options | {"device": args.device}


def run_one(protocol: Protocol, x: np.ndarray, y: np.ndarray, k: int, draw: int, options: dict):
    """One job: the zip of draw `draw` with k minority images, the pipeline, its figures."""
    counts = {protocol.minority: k, **protocol.majority}
    with tempfile.TemporaryDirectory() as tmp:
        zip_path = Path(tmp) / "data.zip"
        write_digits_zip(zip_path, x, y, counts, protocol.test_per_class, seed=draw)
        t = time.perf_counter()
        report = run_pipeline(zip_path, None, RunConfig.from_dict({**options, "seed": draw}))
        seconds = time.perf_counter() - t
    name = str(protocol.minority)
    row = {
        "k": k,
        "draw": draw,
        "seconds": round(seconds, 2),
        "device": report["environment"]["device"],
        "classifier_augmentation": report["classifier_augmentation"]["resolved"],
    }
    for m in METHODS:
        figures = report["methods"][m]
        row[m] = {
            "minority": figures["per_class"][name]["accuracy"],
            "minority_precision": figures["per_class"][name]["precision"],
            "balanced": figures["balanced_accuracy"],
            "macro_f1": figures["macro_f1"],
        }
    # The report's own verdicts (bootstrap over test images and classifier seeds of this draw).
    comp = report["comparisons"].get(name, {})
    row["verdicts"] = {key: comp[key]["verdict"] for key in comp if key.startswith("gan_vs_")}
    return row


def resumed_rows(path: Path | None, settings: dict, ap: argparse.ArgumentParser) -> list[dict]:
    if path is None or not path.exists():
        return []
    doc = json.loads(path.read_text())
    if doc.get("settings") != settings:
        ap.error(
            f"{path} holds a run with other settings ({doc.get('settings')}); "
            "pass another --json file"
        )
    print(f"resuming {path}: {len(doc['rows'])} job(s) done", flush=True)
    return doc["rows"]


def write_json(path: Path, settings: dict, rows: list[dict], commit: str | None) -> None:
    doc = {
        "settings": settings,
        "commit": commit,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": rows,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def summary_tables(rows: list[dict]) -> str:
    """Per figure, a table: k, draws, mean ± sd per method, GAN − oversample and GAN −
    baseline as mean [95 % t-interval over draws] of the paired per-draw differences."""
    out = []
    for key, heading in FIGURES:
        header = ["k", "draws", *METHODS, "gan − oversample [95 % CI]", "gan − baseline [95 % CI]"]
        table = []
        for k in sorted({r["k"] for r in rows}):
            rs = [r for r in rows if r["k"] == k]
            values = {m: np.array([_num(r[m][key]) for r in rs]) for m in METHODS}
            cells = [str(k), str(len(rs))]
            cells += [mean_sd(values[m]) for m in METHODS]
            for other in ("oversample", "baseline"):
                cells.append(paired(values["gan"] - values[other]))
            table.append(cells)
        out.append(f"\n{heading} (mean ± sd over draws)\n" + format_table(header, table))
    seconds = [r["seconds"] for r in rows]
    if seconds:
        out.append(f"\n{len(rows)} jobs, {np.mean(seconds):.1f} s/job, {rows[0]['device']}")
    return "\n".join(out)


def mean_sd(v: np.ndarray) -> str:
    v = v[~np.isnan(v)]
    if not len(v):
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def paired(d: np.ndarray) -> str:
    """Mean of paired differences and its 95 % t-interval (needs two draws or more)."""
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return f"{d.mean():+.3f}" if len(d) else "n/a"
    lo, hi = t_interval(d)
    return f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}]"


def t_interval(d: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def _num(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None  # the device copy of the tree may have no .git
    return out.stdout.strip()


if __name__ == "__main__":
    main()
