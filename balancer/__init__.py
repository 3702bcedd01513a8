"""gan-balancer from Python: `from balancer import GANOverSampler, Client, run`.

GANOverSampler (needs the imblearn extra) and Client (httpx) are imported on first use, so
`import balancer` stays light and works without either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["GANOverSampler", "Client", "run"]


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
    if name == "GANOverSampler":
        from balancer.sampler import GANOverSampler

        return GANOverSampler
    if name == "Client":
        from balancer.client import Client

        return Client
    raise AttributeError(f"module 'balancer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
