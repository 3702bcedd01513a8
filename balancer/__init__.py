"""gan-balancer from Python: `from balancer import GANOverSampler, Client, run`.

GANOverSampler (needs the imblearn extra) and the client's names (httpx) are imported on
first use, so `import balancer` stays light and works without either.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# name -> the module that defines it, imported when the name is first asked for
_LAZY = {
    "GANOverSampler": "balancer.sampler",
    "Client": "balancer.client",
    "Job": "balancer.client",
    "Dataset": "balancer.client",
    "ServiceError": "balancer.client",
    "ServiceUnreachable": "balancer.client",
}
__all__ = ["run", *_LAZY]


def run(
    dataset_zip: str | Path,
    out_dir: str | Path,
    progress: Callable[[str, float], None] | None = None,
    **options: Any,
) -> dict:
    """Balance a dataset zip as `balancer run` does; returns report.json's content.

    options are pipeline.config.RunConfig fields (preset="quick", target=500, device="cpu",
    ...); out_dir receives report.json, report.html, balanced.zip and samples.png.
    progress(stage, fraction of the whole run) is called as the run moves on.
    """
    from pipeline.config import RunConfig
    from pipeline.run import run_pipeline

    return run_pipeline(Path(dataset_zip), Path(out_dir), RunConfig.from_dict(options), progress)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'balancer' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
