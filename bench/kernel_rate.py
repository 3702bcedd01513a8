"""Is a packed GPU bound by kernel count or by work? (issue 13's diagnosis)

    python bench/kernel_rate.py --out $OUT/kernel_rate.json

1. Empty-ish kernels: S streams, each a chain of L tiny in-place kernels on a 1,024-float
   tensor, captured in one graph. Microseconds per kernel, amortised over all streams: the
   GPU's rate of running kernels that do almost no work.
2. The GAN step with G and D under torch.compile (inductor, its layout optimisation off):
   compile seconds, kernels per step, ms per iteration for 1 GAN and for N GANs on N
   streams, against the plain step. Needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.profile_job import gan_states, kernel_profile, ms_per_iteration  # noqa: E402
from pipeline.engine import concurrent  # noqa: E402
from pipeline.gan import gan_step  # noqa: E402


def kernel_rate(streams: int, length: int = 200) -> float:
    dev = torch.device("cuda")
    xs = [torch.ones(1024, device=dev) for _ in range(streams)]

    def chain(x: torch.Tensor) -> None:
        for _ in range(length):
            x.mul_(1.0000001)

    steps = [lambda x=x: chain(x) for x in xs]
    step = steps[0] if streams == 1 else concurrent(steps, dev)
    ms = ms_per_iteration(step, iterations=200)
    return ms * 1000 / (streams * length)  # us per kernel


def compiled_states(n: int, iterations: int) -> tuple[list, float]:
    import torch._inductor.config as inductor

    # With inductor's default layout optimisation (convolutions switched to channels-last)
    # the compiled backward failed on the H200: "expected ... stride" in convolution_backward.
    inductor.layout_optimization = False
    states = gan_states(n, 1, iterations)
    t = time.perf_counter()
    for st in states:
        st.g = torch.compile(st.g)
        st.d = torch.compile(st.d)
        gan_step(st)  # compiles (first state) or reuses the compiled code
        torch.cuda.synchronize()
    return states, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--gans", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"{Path(__file__).name} measures CUDA kernels: it needs a CUDA device")
    result: dict = {"device": torch.cuda.get_device_name(), "kernel_us": {}, "gan": []}
    for s in args.streams:
        result["kernel_us"][s] = kernel_rate(s)
        print(json.dumps({"streams": s, "us_per_kernel": result["kernel_us"][s]}), flush=True)
    try:
        import triton

        result["triton"] = triton.__version__
        for n in args.gans:
            plain = gan_states(n, 1, 2000)
            steps = [lambda s=s: gan_step(s) for s in plain]
            plain_ms = ms_per_iteration(
                steps[0] if n == 1 else concurrent(steps, plain[0].real.device)
            )
            comp, compile_s = compiled_states(n, 2000)
            steps = [lambda s=s: gan_step(s) for s in comp]
            comp_ms = ms_per_iteration(
                steps[0] if n == 1 else concurrent(steps, comp[0].real.device)
            )
            row = {"gans": n, "plain_ms": plain_ms, "compiled_ms": comp_ms, "compile_s": compile_s}
            if n == 1:
                row["compiled_kernels"] = kernel_profile(lambda s=comp[0]: gan_step(s))
                print(row["compiled_kernels"]["table"])
                row["compiled_kernels"].pop("table")
            result["gan"].append(row)
            print(json.dumps(row), flush=True)
    except Exception as e:  # noqa: BLE001  the kernel rate is still worth reporting
        import traceback

        traceback.print_exc()
        result["compile_error"] = repr(e)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    print("\nstreams  us/kernel")
    for s, us in result["kernel_us"].items():
        print(f"{s:>7}  {us:.2f}")
    for r in result["gan"]:
        print(
            f"{r['gans']} GANs: plain {r['plain_ms']:.3f} ms/it, compiled {r['compiled_ms']:.3f}"
            f" ms/it, compile {r['compile_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
