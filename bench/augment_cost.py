"""What classifier augmentation adds to the classifier stage, per policy.

Trains the stacked SmallCNNs of the demo's quick-preset job (3 methods x 1 seed, 28x28
grayscale, batch 64, 150 steps: 10 epochs over the 900-image balanced pool) with each policy,
interleaved and repeated, and prints the median seconds per policy. The GAN stage, the bulk of
a job, does not depend on the policy.

    python bench/augment_cost.py [--device cpu|cuda] [--members 3] [--steps 150] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.augment import POLICIES, augment, augmentation_for  # noqa: E402
from pipeline.classifier import train_classifiers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (900, 1, args.size, args.size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(900) % 3
    pools = torch.arange(900).repeat(args.members, 1)
    sizes = torch.full((args.members,), 900)
    tensors = [t.to(dev) for t in (images, labels, pools, sizes)]
    policies = [p for p in POLICIES if p != "auto"]
    seconds: dict[str, list[float]] = {p: [] for p in policies}
    for _ in range(args.repeats):
        for policy in policies:  # interleaved: a change in machine load hits every policy
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            train_classifiers(
                *tensors[:4],
                list(range(args.members)),
                3,
                args.steps,
                args.batch,
                augmentation=augmentation_for(policy),
            )
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            seconds[policy].append(time.perf_counter() - t)
    print(f"{dev}, {torch.get_num_threads()} thread(s), {args.members} members, {args.steps} steps")
    base = statistics.median(seconds["none"])
    for policy in policies:
        med = statistics.median(seconds[policy])
        runs = ", ".join(f"{s:.2f}" for s in seconds[policy])
        print(f"{policy:<12} median {med:.2f} s ({med - base:+.2f} s vs none)  runs: {runs}")
    # The transform alone, on the same number of images: what the policy itself costs.
    x = torch.rand(args.members * args.batch, 1, args.size, args.size, device=dev) * 2 - 1
    for policy in policies[1:]:
        aug = augmentation_for(policy)
        times = []
        for _ in range(args.repeats):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            for _ in range(args.steps):
                augment(x, aug)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        print(f"{policy:<12} transform alone: {med:.3f} s for {args.steps} batches of {len(x)}")


if __name__ == "__main__":
    main()
