"""Pay a GPU worker's one-time costs before its first job, not during it.

A fresh process's first job on CUDA spends seconds on things later jobs reuse: the CUDA
context, cuDNN and cuBLAS handles, the first graph captures, the evaluation and report imports
(docs/benchmarks.md: 9.9 s cold against 3.8 s warm). `warm_up` runs one tiny job shaped like a
standard one (28x28 grayscale, GAN batch 64, 3 methods x 3 classifier seeds) on synthetic data.
"""

from __future__ import annotations

import io
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import RunConfig
from pipeline.engine import make_lanes
from pipeline.output_pool import OutputPool
from pipeline.run import pick_device, run_pipeline


def warm_up(device: str = "auto", jobs: int = 1, outputs: OutputPool | None = None) -> float:
    """Run the tiny job on CUDA and return its seconds; 0.0 (and nothing done) on a CPU.

    jobs: the worker's job slots; a stream lane (pipeline/engine.py) is made for each,
    and `outputs` starts its writer processes meanwhile.
    """
    dev = pick_device(device)
    if dev.type != "cuda":
        return 0.0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="balancer-warmup-") as tmp:
        dataset = Path(tmp) / "warmup.zip"
        _write_noise_dataset(dataset)
        config = RunConfig(preset="standard", device="cuda", gan_iterations=20, epochs=1)
        with ThreadPoolExecutor(1) as threads:
            writers = threads.submit(outputs.warm_up) if outputs is not None else None
            # One job, alone: every library PyTorch loads on first use loads now, in one
            # thread. Not one job per slot side by side as well: making the slots' lanes was
            # all that did which the first real jobs would not do as fast themselves, and
            # without it (and scipy's import) the warm-up took 8.6 s instead of 14.0 on an
            # H200 (docs/benchmarks.md, "Third re-run").
            run_pipeline(dataset, Path(tmp) / "out", config)
            make_lanes(dev, jobs)
            if writers is not None:
                writers.result()
    return time.perf_counter() - start


def _write_noise_dataset(path: Path, counts: tuple[int, int] = (40, 8)) -> None:
    """Two classes of 28x28 noise PNGs; the second is a minority class, so a GAN trains."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for label, n in enumerate(counts):
            for i in range(n):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, "PNG")
                zf.writestr(f"c{label}/{i}.png", buf.getvalue())
