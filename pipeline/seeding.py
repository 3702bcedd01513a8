"""Seeded weight initialisation that other jobs running in the same process cannot disturb."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pipeline.engine import training_rng

_lock = threading.RLock()


@contextmanager
def seeded_init(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Build and initialise networks inside this block, on the CPU, then move them; and seed
    the training steps' random numbers on `device` (pipeline/engine.training_rng).

    The weights come from the CPU generator seeded with `seed`, and no other thread builds
    networks meanwhile, so a job's initial weights depend on its seed alone even while other
    jobs start in the same worker. Not torch.manual_seed: that resets every CUDA generator,
    the default one included, which another job's training may be drawing from.
    """
    with _lock:
        torch.default_generator.manual_seed(seed)
        if device is not None and device.type == "cuda":
            rng = training_rng(device)
            if rng is not None:
                rng.manual_seed(seed)
            else:  # no job lane: one job in this process, as torch.manual_seed used to do
                torch.cuda.manual_seed(seed)
        yield
