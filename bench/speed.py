"""Speed: the CUDA-graph engine against the plain eager loop, side by side in one run.

Parts (all by default; pick with --parts):
  micro    ms per GAN iteration (K = 1, 3, 5, 9 stacked class GANs) and per classifier step
           (9 stacked SmallCNNs), eager vs graph, plus variants (cuDNN autotune, bf16 autocast,
           no augmentation as a diagnostic).
  jobs     the standard seed-sized job (MNIST 1/2/3, 10/300/300 training, 200 test each; 3,000
           GAN iterations; 3 methods x 3 seeds x 30 epochs; evaluation, report, packaging)
           end to end, each engine in its own fresh process: a cold first job, then warm ones
           (same process: CUDA context, cuDNN and allocator kept) on run seeds 0, 1, 2, with
           minority and balanced accuracy for each.
  scaling  the job on 10-class MNIST with 1, 3, 5 and 9 minority classes (10 training images
           each, 300 for the others, 200 test per class), graph engine, warm.
  size     the standard 3-class job against a 10-class one with ~5,000 images (400 train / 100
           test per majority digit, digit 1 a minority of 10), graph engine, warm.
Prints markdown tables last; writes speed.json and speed.log under --out ($OUT by default).

    python bench/speed.py [--parts micro,jobs,scaling,size] [--out DIR]
    python bench/speed.py --quick --device cpu   # smoke test of the script itself
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import pipeline.gan as gan_module  # noqa: E402
from bench.common import ROOT, format_table, load_digits  # noqa: E402
from pipeline.classifier import classifier_step, make_classifier_state  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.engine import capture, concurrent  # noqa: E402
from pipeline.gan import gan_step, make_gan_state, split_members  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402

LOG: list[str] = []


def log(*parts) -> None:
    line = " ".join(str(p) for p in parts)
    LOG.append(line)
    print(line, file=sys.stderr, flush=True)


# ---- per-step timings ------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(step, engine: str, device: torch.device, n: int, warm: int = 10) -> float:
    """Median-free simple timing: ms per call of `step` (eager) or per graph replay."""
    if engine == "graph":
        graph = capture(step, device)  # runs WARMUP_STEPS eager iterations first
        run = graph.replay
    else:
        run = step
    for _ in range(warm):
        run()
    sync(device)
    t = time.perf_counter()
    for _ in range(n):
        run()
    sync(device)
    return (time.perf_counter() - t) / n * 1e3


@contextlib.contextmanager
def variant(name: str):
    """Global switches for one measurement: cudnn autotune, bf16 autocast."""
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = "cudnn" in name
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def autocast(name: str):
    """bf16 autocast for the "bf16" variants (cache off: required under graph capture)."""
    if "bf16" in name:
        return torch.autocast("cuda", torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def gan_ms(k: int, engine: str, device, n: int, name: str = "") -> float:
    g = torch.Generator().manual_seed(k)
    real = (torch.rand(k, 10, 1, 28, 28, generator=g) * 2 - 1).to(device)
    st = make_gan_state(
        real,
        torch.full((k,), 10),
        torch.tensor([True] * k),
        n + 40,  # history rows: warm-up + capture warm-up + timed steps, with room to spare
        64,
        100,
        2e-4,
        64,
        0,
        engine,
    )
    plain = gan_module.augmented
    if "noaug" in name:  # diagnostic only: what DiffAugment costs per iteration
        gan_module.augmented = lambda x, mask: x

    if "streams" in name:  # K single-member GANs on K CUDA streams (pipeline/gan.py)
        members = split_members(st, n + 40, engine)
        one = concurrent([lambda ms=ms: gan_step(ms) for ms in members], device)
    else:
        one = lambda: gan_step(st)  # noqa: E731

    def step() -> None:
        with autocast(name):
            one()

    try:
        with variant(name):
            return time_step(step, engine, device, n)
    finally:
        gan_module.augmented = plain


def classifier_ms(m: int, classes: int, engine: str, device, n: int, name: str = "") -> float:
    g = torch.Generator().manual_seed(m)
    images = torch.randint(0, 256, (900, 1, 28, 28), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, classes, (900,), generator=g).to(device)
    pools = torch.arange(900).repeat(m, 1).to(device)
    sizes = torch.tensor([610, 900, 900] * (m // 3) + [900] * (m % 3)).to(device)
    st = make_classifier_state(
        images, labels, pools, sizes, list(range(m)), classes, n + 40, 64, 1e-3, 0, engine
    )

    def step() -> None:
        with autocast(name):
            classifier_step(st)

    with variant(name):
        return time_step(step, engine, device, n)


def part_micro(args, device, engines) -> dict:
    out: dict = {"gan": [], "classifier": [], "variants": []}
    for k in (1, 3, 5, 9):
        row = {"k": k}
        for e in engines:
            n = args.micro_steps if e == "graph" else max(args.micro_steps // 5, 5)
            row[e] = gan_ms(k, e, device, n)
        log("micro gan", json.dumps(row))
        out["gan"].append(row)
    for classes in (3, 10):
        row = {"m": 9, "classes": classes}
        for e in engines:
            n = args.micro_steps if e == "graph" else max(args.micro_steps // 5, 5)
            row[e] = classifier_ms(9, classes, e, device, n)
        log("micro classifier", json.dumps(row))
        out["classifier"].append(row)
    if "graph" in engines:
        variants = [v for v in args.variants.split(",") if v]
        if "streams" in variants:
            for k in (3, 5, 9):
                ms = gan_ms(k, "graph", device, args.micro_steps, "graph+streams")
                out["variants"].append({"what": f"GAN K={k}", "variant": "graph+streams", "ms": ms})
                log("variant", out["variants"][-1])
        for name in [f"graph+{v}" for v in variants if v != "streams"]:
            for k in (1, 9):
                ms = gan_ms(k, "graph", device, args.micro_steps, name)
                out["variants"].append({"what": f"GAN K={k}", "variant": name, "ms": ms})
                log("variant", out["variants"][-1])
            if "noaug" not in name:
                ms = classifier_ms(9, 3, "graph", device, args.micro_steps, name)
                out["variants"].append({"what": "classifier M=9", "variant": name, "ms": ms})
                log("variant", out["variants"][-1])
    return out


# ---- whole jobs ------------------------------------------------------------------------


def standard_counts() -> dict[int, int]:
    return {1: 10, 2: 300, 3: 300}


def scaling_counts(minority: int) -> dict[int, int]:
    """10 digits; digits 1..minority get 10 training images, the others 300."""
    return {d: (10 if 1 <= d <= minority else 300) for d in range(10)}


def make_zip(path: Path, counts: dict[int, int], test: int, seed: int) -> Path:
    x, y = load_digits()
    write_digits_zip(path, x, y, counts, test_per_class=test, seed=seed)
    return path


def run_job(zip_path: Path, cfg: RunConfig, minority: list[str]) -> dict:
    """One pipeline run, timed on the wall clock, with its peak GPU memory and accuracies."""
    device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        report = run_pipeline(zip_path, Path(out), cfg)
        seconds = time.perf_counter() - t
    methods = report["methods"]
    row = {
        "engine": cfg.engine,
        "seed": cfg.seed,
        "seconds": seconds,
        "timings": report["timings"],
        "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0,
        "train_images": sum(c["train_count"] for c in report["classes"]),
        "test_images": sum(c["test_count"] for c in report["classes"]),
        "minority_classes": len(minority),
    }
    for m, fig in methods.items():
        row[f"{m}_minority"] = float(np.mean([fig["per_class"][c]["accuracy"] for c in minority]))
        row[f"{m}_balanced"] = fig["balanced_accuracy"]
    return row


def job_config(args, engine: str, seed: int, **extra) -> RunConfig:
    return RunConfig(
        preset="standard",
        device=args.device,
        engine=engine,
        seed=seed,
        gan_iterations=extra.get("gan_iterations", args.gan_iterations),
        epochs=args.epochs,
    )


def child_jobs(args) -> None:
    """In a fresh process: the standard job once cold, then warm, for one engine."""
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        zips = {
            s: make_zip(Path(tmp) / f"std{s}.zip", standard_counts(), 200, s) for s in (0, 1, 2)
        }
        for i, seed in enumerate(args.job_seeds):
            row = run_job(zips[seed], job_config(args, args.child, seed), ["1"])
            row["phase"] = "cold" if i == 0 else "warm"
            print("JOB " + json.dumps(row), flush=True)
            results.append(row)


def part_jobs(args, engines) -> list[dict]:
    rows = []
    for engine in engines:
        seeds = args.eager_seeds if engine == "eager" else args.graph_seeds
        cmd = [sys.executable, __file__, "--child", engine, "--job-seeds", *map(str, seeds)]
        cmd += ["--device", args.device]
        if args.gan_iterations:
            cmd += ["--gan-iterations", str(args.gan_iterations)]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        log("child", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in proc.stderr.splitlines()[-20:]:
            log("  child:", line)
        if proc.returncode:
            log(f"child {engine} FAILED: rc={proc.returncode}")
        for line in proc.stdout.splitlines():
            if line.startswith("JOB "):
                rows.append(json.loads(line[4:]))
                log("job", line[4:])
    return rows


def part_scaling(args, engine: str, layouts: list[str]) -> list[dict]:
    """Jobs with 1, 3, 5, 9 minority classes, for each GAN member layout (1 class: one run,
    the layouts are the same network then)."""
    rows = []
    default = gan_module.MEMBER_LAYOUT
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, 3, 5, 9):
            zp = make_zip(Path(tmp) / f"scale{n}.zip", scaling_counts(n), 200, 0)
            for layout in layouts[:1] if n == 1 else layouts:
                gan_module.MEMBER_LAYOUT = layout
                cfg = job_config(args, engine, 0, gan_iterations=args.scaling_iterations)
                try:
                    row = run_job(zp, cfg, [str(d) for d in range(1, n + 1)])
                except Exception as exc:  # report a failing layout, keep the rest of the run
                    log("scaling FAILED", layout, n, repr(exc))
                    continue
                finally:
                    gan_module.MEMBER_LAYOUT = default
                row["gan_iterations"] = cfg.gan_iterations or 3000
                row["layout"] = layout if n > 1 else "-"
                rows.append(row)
                log("scaling", json.dumps(row))
    return rows


def part_size(args, engine: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        small = make_zip(Path(tmp) / "small.zip", standard_counts(), 200, 0)
        big_counts = {d: (10 if d == 1 else 400) for d in range(10)}
        big = make_zip(Path(tmp) / "big.zip", big_counts, 100, 0)
        for name, zp in (
            ("3 digits, 10/300/300 + 200 test", small),
            ("10 digits, 400 (1: 10) + 100 test", big),
        ):
            row = run_job(zp, job_config(args, engine, 0), ["1"])
            row["dataset"] = name
            rows.append(row)
            log("size", json.dumps(row))
    return rows


# ---- tables ----------------------------------------------------------------------------


def f(x: float, d: int = 2) -> str:
    return f"{x:.{d}f}"


def tables(res: dict) -> str:
    out = []
    env = res["environment"]
    out.append(f"\n## Speed ({env['device']}, torch {env['torch']}, commit {env['commit']})\n")
    if res.get("jobs"):
        out.append("### Standard job end to end (s = wall seconds of run_pipeline)\n")
        header = [
            "engine",
            "phase",
            "seed",
            "s/job",
            "load",
            "GAN",
            "classifiers",
            "eval",
            "pack+html",
            "peak MiB",
            "gan min.",
            "overs. min.",
            "base min.",
            "gan bal.",
            "overs. bal.",
            "base bal.",
        ]
        rows = []
        for r in res["jobs"]:
            t = r["timings"]
            known = sum(
                t.get(k, 0)
                for k in (
                    "loading_seconds",
                    "gan_seconds",
                    "classifier_seconds",
                    "evaluation_seconds",
                )
            )
            rows.append(
                [
                    r["engine"],
                    r["phase"],
                    r["seed"],
                    f(r["seconds"]),
                    f(t.get("loading_seconds", 0)),
                    f(t.get("gan_seconds", 0)),
                    f(t.get("classifier_seconds", 0)),
                    f(t.get("evaluation_seconds", 0)),
                    f(r["seconds"] - known),
                    f(r["peak_mib"], 0),
                    f(r["gan_minority"], 3),
                    f(r["oversample_minority"], 3),
                    f(r["baseline_minority"], 3),
                    f(r["gan_balanced"], 3),
                    f(r["oversample_balanced"], 3),
                    f(r["baseline_balanced"], 3),
                ]
            )
        out.append(format_table(header, rows))
        summary = []
        for e in ("eager", "graph"):
            warm = [r for r in res["jobs"] if r["engine"] == e and r["phase"] == "warm"]
            cold = [r for r in res["jobs"] if r["engine"] == e and r["phase"] == "cold"]
            if not warm:
                continue
            s = np.array([r["seconds"] for r in warm])
            allr = cold + warm
            mino = np.array([r["gan_minority"] for r in allr])
            bal = np.array([r["gan_balanced"] for r in allr])
            summary.append(
                [
                    e,
                    f(cold[0]["seconds"]) if cold else "-",
                    f(s.mean()),
                    f(3600 / s.mean(), 0),
                    f(max(r["peak_mib"] for r in allr), 0),
                    f"{mino.mean():.3f} ± {mino.std(ddof=1) if len(mino) > 1 else 0:.3f}",
                    f"{bal.mean():.3f} ± {bal.std(ddof=1) if len(bal) > 1 else 0:.3f}",
                    str(len(allr)),
                ]
            )
        if len(summary) == 2:
            ratio = float(summary[0][2]) / float(summary[1][2])
            summary[1].append(f"{ratio:.1f}x")
            summary[0].append("1.0x")
        out.append(
            "\n### Standard job summary (warm: mean of warm jobs; jobs/h: one process per GPU)\n"
        )
        out.append(
            format_table(
                [
                    "engine",
                    "cold s",
                    "warm s",
                    "jobs/h/GPU",
                    "peak MiB",
                    "gan minority (all runs)",
                    "gan balanced (all runs)",
                    "runs",
                    "speed-up",
                ][: len(summary[0])],
                summary,
            )
        )
    if res.get("micro"):
        m = res["micro"]
        out.append("\n### Per step (ms; eager: Python loop, graph: one CUDA-graph replay)\n")
        rows = [
            [
                f"GAN iteration, K={r['k']} class GANs stacked",
                f(r.get("eager", float("nan"))),
                f(r.get("graph", float("nan")), 3),
                f(r.get("eager", float("nan")) / r["graph"], 1) if "graph" in r else "-",
            ]
            for r in m["gan"]
        ]
        rows += [
            [
                f"classifier step, M={r['m']} SmallCNNs, {r['classes']} classes",
                f(r.get("eager", float("nan"))),
                f(r.get("graph", float("nan")), 3),
                f(r.get("eager", float("nan")) / r["graph"], 1) if "graph" in r else "-",
            ]
            for r in m["classifier"]
        ]
        out.append(format_table(["step", "eager ms", "graph ms", "speed-up"], rows))
        if m["variants"]:
            out.append("\n### Graph variants (ms per step)\n")
            out.append(
                format_table(
                    ["step", "variant", "ms"],
                    [[v["what"], v["variant"], f(v["ms"], 3)] for v in m["variants"]],
                )
            )
    if res.get("scaling"):
        out.append("\n### Minority-class count (10-class MNIST, graph engine, warm)\n")
        base = res["scaling"][0]
        rows = [
            [
                r["minority_classes"],
                r["layout"],
                r["gan_iterations"],
                f(r["seconds"]),
                f(r["seconds"] / base["seconds"]),
                f(r["timings"]["gan_seconds"]),
                f(r["timings"]["gan_seconds"] / base["timings"]["gan_seconds"]),
                f(r["timings"]["classifier_seconds"]),
                f(r["peak_mib"], 0),
                f(r["gan_minority"], 3),
                f(r["oversample_minority"], 3),
                f(r["baseline_minority"], 3),
            ]
            for r in res["scaling"]
        ]
        out.append(
            format_table(
                [
                    "minority classes",
                    "GAN layout",
                    "GAN iters",
                    "s/job",
                    "x (vs 1)",
                    "GAN s",
                    "GAN x",
                    "classifier s",
                    "peak MiB",
                    "gan min.",
                    "overs. min.",
                    "base min.",
                ],
                rows,
            )
        )
    if res.get("size"):
        out.append("\n### Dataset size (graph engine, warm, 1 minority class)\n")
        rows = [
            [
                r["dataset"],
                r["train_images"],
                r["test_images"],
                f(r["seconds"]),
                f(r["timings"]["loading_seconds"]),
                f(r["timings"]["gan_seconds"]),
                f(r["timings"]["classifier_seconds"]),
                f(r["timings"].get("evaluation_seconds", 0)),
                f(r["peak_mib"], 0),
            ]
            for r in res["size"]
        ]
        out.append(
            format_table(
                [
                    "dataset",
                    "train",
                    "test",
                    "s/job",
                    "load",
                    "GAN",
                    "classifiers",
                    "eval",
                    "peak MiB",
                ],
                rows,
            )
        )
    return "\n".join(out)


def _git(*cmd: str) -> str:
    try:
        done = subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=ROOT)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="micro,jobs,scaling,size")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench-out")))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gan-iterations", type=int, help="default: the standard preset's 3,000")
    ap.add_argument("--epochs", type=int, help="default: the standard preset's 30")
    ap.add_argument("--scaling-iterations", type=int, help="GAN iterations for the scaling table")
    ap.add_argument("--micro-steps", type=int, default=500)
    ap.add_argument(
        "--variants",
        default="streams",
        help="graph variants to time in the micro part: streams, cudnn, bf16, noaug",
    )
    ap.add_argument("--graph-seeds", type=int, nargs="+", default=[0, 0, 1, 2])
    ap.add_argument("--eager-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--engines", default="eager,graph", help="engines for the jobs part")
    ap.add_argument("--commit", help="commit hash to record (default: git rev-parse)")
    ap.add_argument("--quick", action="store_true", help="tiny iteration counts: smoke test")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--job-seeds", type=int, nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.gan_iterations = args.gan_iterations or 20
        args.epochs = args.epochs or 1
        args.scaling_iterations = args.scaling_iterations or 20
        args.micro_steps = min(args.micro_steps, 10)
        args.graph_seeds, args.eager_seeds = [0, 0], [0, 0]
    if args.child:
        child_jobs(args)
        return
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    engines = [e for e in args.engines.split(",") if use_cuda or e == "eager"]
    fast = "graph" if use_cuda else "eager"
    # The device gets a copy of the tree without .git: the caller passes the commit.
    commit = args.commit or _git("rev-parse", "--short", "HEAD") or "unknown"
    res: dict = {
        "environment": {
            "device": torch.cuda.get_device_name() if use_cuda else "cpu",
            "torch": torch.__version__,
            "commit": commit,
            "date": time.strftime("%Y-%m-%d"),
            "argv": sys.argv[1:],
        }
    }
    args.out.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    t0 = time.perf_counter()

    def attempt(name: str, fn) -> None:
        """Run one part; a failing part is logged and the others still run and print."""
        if name not in parts:
            return
        try:
            res[name] = fn()
        except Exception as exc:
            log(f"part {name} FAILED:", repr(exc))
            res.setdefault("failed", []).append(f"{name}: {exc!r}")

    # Jobs first: their children are fresh processes (cold), and nothing else holds the GPU.
    attempt("jobs", lambda: part_jobs(args, engines))
    if "scaling" in parts or "size" in parts:
        # Warm this process up first so the tables below are warm-worker figures.
        def warm_up() -> dict:
            with tempfile.TemporaryDirectory() as tmp:
                zp = make_zip(Path(tmp) / "warm.zip", standard_counts(), 200, 0)
                cfg = job_config(args, fast, 0, gan_iterations=args.scaling_iterations)
                return run_job(zp, cfg, ["1"])

        parts.append("warm_up")
        attempt("warm_up", warm_up)
    attempt("size", lambda: part_size(args, fast))
    layouts = ["stacked", "streams"] if use_cuda else ["stacked"]
    attempt("scaling", lambda: part_scaling(args, fast, layouts))
    attempt("micro", lambda: part_micro(args, device, ["eager", "graph"][: 2 if use_cuda else 1]))
    res["bench_seconds"] = time.perf_counter() - t0
    (args.out / "speed.json").write_text(json.dumps(res, indent=1))
    text = tables(res)
    if res.get("failed"):
        text += "\n\nFAILED parts: " + "; ".join(res["failed"])
    (args.out / "speed.log").write_text("\n".join(LOG) + "\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
