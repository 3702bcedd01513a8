"""jobs.queue.declare_queues: the embedded broker's queue rows exist before workers start,
and declaring again (every `balancer worker --gpus` start does) is harmless."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jobs.queue import declare_queues
from jobs.settings import Settings


def test_queues_are_declared_once_and_again_without_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    declare_queues(settings, ["gpu", "other"])
    declare_queues(settings, ["gpu"])  # a second host start: the rows exist, no insert
    with sqlite3.connect(tmp_path / "broker.db") as db:
        names = sorted(r[0] for r in db.execute("SELECT name FROM kombu_queue"))
    assert names == ["gpu", "other"]
