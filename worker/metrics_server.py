"""The HTTP server of `balancer worker --metrics-port P`, in the worker's main process.

Jobs run in Celery's forked pool processes; prometheus_client's multiprocess mode carries
their figures (worker/observability.py) here: each process writes its values to files in
PROMETHEUS_MULTIPROC_DIR and this server adds them up at each scrape. Gauges created before
the variable is set keep their values in memory, where this server cannot see them, so
`serve()` runs before Celery (and worker.observability) are imported.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(port: int, host: str = "127.0.0.1") -> Path:
    """In the worker's main process, before Celery starts: a fresh multiprocess directory
    (removed at exit) and an HTTP server for /metrics. Returns the directory."""
    if "worker.observability" in sys.modules:
        raise RuntimeError("serve() must run before worker.observability creates its gauges")
    folder = Path(tempfile.mkdtemp(prefix="balancer-worker-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    _use_files()
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_LiveProcessesCollector(folder))
    start_http_server(port, addr=host, registry=registry)
    return folder


def _use_files() -> None:
    """Make gauges created from now on write to the multiprocess directory, even if
    prometheus_client was imported (and chose in-memory values) before it was set."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


class _LiveProcessesCollector:
    """The multiprocess figures, after dropping those of pool processes that died without a
    word (killed, out of memory), so that a dead process's job does not count as running."""

    _PID = re.compile(r"_(\d+)\.db$")

    def __init__(self, folder: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.folder = folder
        self.inner = MultiProcessCollector(None, path=str(folder))

    def collect(self):  # noqa: ANN201 (metric families)
        from prometheus_client import multiprocess

        for file in self.folder.glob("*.db"):
            match = self._PID.search(file.name)
            if match and not _alive(int(match.group(1))):
                multiprocess.mark_process_dead(int(match.group(1)), str(self.folder))
        return self.inner.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
