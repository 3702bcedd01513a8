"""Where a standard seed-sized job's GPU time goes (issue 13's diagnosis). Needs CUDA.

    python bench/profile_job.py --out $OUT/profile.json
    python bench/profile_job.py --parts layouts,kernels --gans 1 8 \\
        --variants default channels_last benchmark tf32 --out $OUT/variants.json

Parts (--parts):
  job      one warm job alone under cProfile: the report's stage timings, the process's CPU
           seconds, the functions with the most own time (GPU waits show up as synchronize).
  layouts  milliseconds per iteration of the captured GAN step for 1 GAN and for N GANs on N
           streams in one graph (`concurrent`, as N jobs at once overlap) or stacked as
           members of one network (grouped convolutions); then the classifier step with 9
           members (the compared classifiers) and with 1 (the filter's judge), 1 and N on
           streams. Per GAN (or classifier) = the time / N: its GPU cost when packed.
  kernels  one GAN step and one classifier step under torch.profiler (eager): kernels per
           step and their summed GPU time, against the graph's wall time per step.
Variants (--variants): default; channels_last (parameters in channels-last memory format);
benchmark (cudnn.benchmark, single-threaded here); tf32 (TF32 matrix multiplies).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import load_digits  # noqa: E402
from pipeline.config import RunConfig  # noqa: E402
from pipeline.demo import write_digits_zip  # noqa: E402
from pipeline.engine import concurrent, run_steps  # noqa: E402
from pipeline.gan import gan_step, make_gan_state  # noqa: E402
from pipeline.run import run_pipeline  # noqa: E402


def job_profile(tmp: Path) -> dict:
    x, y = load_digits()
    zips = []
    for seed in range(4):
        z = tmp / f"d{seed}.zip"
        write_digits_zip(z, x, y, {1: 10, 2: 300, 3: 300}, 200, seed=seed)
        zips.append(z)
    for i in range(2):  # warm: captures, cuDNN choices, lazy imports
        run_pipeline(zips[i], tmp / f"warm{i}", RunConfig(seed=i))
    prof = cProfile.Profile()
    wall, cpu = time.perf_counter(), time.process_time()
    prof.enable()
    report = run_pipeline(zips[2], tmp / "job", RunConfig(seed=2))
    prof.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
    cum = io.StringIO()
    pstats.Stats(prof, stream=cum).sort_stats("cumulative").print_stats(45)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "timings": report["timings"],
        "tottime": out.getvalue(),
        "cumulative": cum.getvalue(),
    }


VARIANTS = ("default", "channels_last", "benchmark", "channels_last+benchmark", "tf32")


def gan_states(n: int, members: int, iterations: int, variant: str = "default") -> list:
    dev = torch.device("cuda")
    real = torch.rand(members, 64, 1, 28, 28, device=dev) * 2 - 1
    counts = torch.full((members,), 10, dtype=torch.long)
    aug = torch.ones(members, dtype=torch.bool)
    states = [
        make_gan_state(real, counts, aug, iterations, 64, 100, 2e-4, 64, seed, "graph")
        for seed in range(n)
    ]
    if "channels_last" in variant:  # parameters converted in place, before Adam's first step
        for st in states:
            st.g.to(memory_format=torch.channels_last)
            st.d.to(memory_format=torch.channels_last)
    return states


def ms_per_iteration(step, iterations: int = 600) -> float:
    dev = torch.device("cuda")
    run_steps(step, 50, "graph", dev)  # capture + a few replays: cuDNN choices settled
    torch.cuda.synchronize()
    t = time.perf_counter()
    run_steps(step, iterations, "graph", dev)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000 / iterations


def gan_layouts(ns: list[int], variants: list[str]) -> list[dict]:
    rows = []
    for variant in variants:
        torch.backends.cudnn.benchmark = "benchmark" in variant
        torch.backends.cuda.matmul.allow_tf32 = "tf32" in variant
        for n in ns:
            streams = gan_states(n, 1, 2000, variant)
            steps = [lambda s=s: gan_step(s) for s in streams]
            on_streams = ms_per_iteration(
                steps[0] if n == 1 else concurrent(steps, streams[0].real.device)
            )
            row = {"variant": variant, "gans": n, "streams_ms": on_streams}
            if variant == "default":
                stacked = gan_states(1, n, 2000)[0]
                row["stacked_ms"] = ms_per_iteration(lambda s=stacked: gan_step(s))
            rows.append(row)
            print(json.dumps(row), flush=True)
        for members in (9, 1):  # the compared classifiers; the judge
            for n in ns:
                cls = [classifier_step(variant, members) for _ in range(n)]
                dev = torch.device("cuda")
                ms = ms_per_iteration(cls[0] if n == 1 else concurrent(cls, dev))
                rows.append(
                    {"variant": variant, "members": members, "streams": n, "classifier_ms": ms}
                )
                print(json.dumps(rows[-1]), flush=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return rows


def kernel_profile(step, steps: int = 5) -> dict:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    total_us = sum(e.device_time for e in kernels)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    return {
        "kernels_per_step": len(kernels) / steps,
        "gpu_us_per_step": total_us / steps,
        "table": table,
    }


def classifier_step(variant: str = "default", members: int = 9):
    """A classifier training step as the pipeline runs it (affine augmentation): 9 members
    for the compared classifiers (3 methods x 3 seeds), 1 for the filter's judge."""
    from pipeline.augment import augment, augmentation_for
    from pipeline.classifier import SmallCNN

    dev = torch.device("cuda")
    net = SmallCNN(members, 1, 28, 3).to(dev)
    if "channels_last" in variant:
        net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3, capturable=True, fused=True)
    images = torch.rand(members * 64, 1, 28, 28, device=dev)
    yb = torch.randint(0, 3, (members, 64), device=dev)
    aug = augmentation_for("auto")

    def step() -> None:
        xb = augment(images, aug).view(members, 64, 1, 28, 28)
        logits = net(xb)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), yb.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gans", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--parts", default="job,layouts,kernels")
    ap.add_argument("--variants", nargs="+", default=["default"], choices=VARIANTS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"{Path(__file__).name} measures CUDA kernels: it needs a CUDA device")
    result: dict = {"device": torch.cuda.get_device_name()}
    parts = args.parts.split(",")
    if "job" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            result["job"] = job_profile(Path(tmp))
        print(result["job"]["tottime"], result["job"]["cumulative"], flush=True)
    if "layouts" in parts:
        result["gan_layouts"] = gan_layouts(args.gans, args.variants)
    if "kernels" in parts:
        for variant in args.variants:
            st = gan_states(1, 1, 100, variant)[0]
            result[f"gan_kernels {variant}"] = kernel_profile(lambda st=st: gan_step(st))
            result[f"classifier_kernels {variant}"] = kernel_profile(classifier_step(variant))
    kernel_keys = [k for k in result if "_kernels" in k]
    for key in kernel_keys:
        print(key, result[key]["table"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    if "job" in result:
        job = result["job"]
        print(f"\njob alone: wall {job['wall_s']:.2f} s, process CPU {job['cpu_s']:.2f} s")
        print(json.dumps({k: round(v, 3) for k, v in job["timings"].items()}))
    for key in kernel_keys:
        k = result[key]
        print(
            f"{key}: {k['kernels_per_step']:.0f} kernels/step, "
            f"{k['gpu_us_per_step']:.0f} us GPU/step"
        )
    for r in result.get("gan_layouts", []):
        if "classifier_ms" in r:
            n, m = r["streams"], r["members"]
            line = f"{r['variant']:>24} {n:>3} classifiers ({m} members) on streams: "
            print(line + f"{r['classifier_ms']:.3f} ms/step ({r['classifier_ms'] / n:.3f} each)")
            continue
        n = r["gans"]
        line = f"{r['variant']:>24} {n:>3} GANs: streams {r['streams_ms']:.3f} ms/it "
        line += f"({r['streams_ms'] / n:.3f} per GAN)"
        if "stacked_ms" in r:
            line += f", stacked {r['stacked_ms']:.3f} ms/it ({r['stacked_ms'] / n:.3f} per GAN)"
        print(line)


if __name__ == "__main__":
    main()
