"""Write jobs' output files in processes of their own.

Packaging a job (balanced.zip, samples.png, report.html with its charts) is CPU work in
Python, matplotlib and zlib. A worker that runs several jobs at once on one GPU runs them as
threads of one process; done there, packaging would hold the GIL while the other jobs' GPU
steps wait to be launched. In a pool of processes it overlaps with them instead.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.archive import ArchiveLimits
    from pipeline.dataset import ImageDataset
    from pipeline.quality import QualityResult


class OutputPool:
    """A pool of `processes` writer processes, started by `spawn` (a process that holds a CUDA
    context must never fork). Safe to call from many threads at once."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_ignore_stop_signals,
        )

    def warm_up(self) -> None:
        """Start every process and import the writers there (matplotlib takes a second)."""
        for future in [self._pool.submit(_import_writers) for _ in range(self.processes)]:
            future.result()

    def write(
        self,
        out_dir: Path,
        report: dict,
        source_zip: Path,
        ds: ImageDataset,
        balanced,  # pipeline.balance.Balanced
        quality: QualityResult | None,
        spent_s: float | None = None,
        limits: ArchiveLimits | None = None,
    ) -> dict[str, float]:
        """pipeline.outputs.write_outputs with these arguments, in the pool: report.html's charts
        drawn side by side in several processes first (a seed-sized job's five charts took
        about a second one after the other), then the files. Returns the timings it added
        to its copy of the report, and adds them to `report` here too."""
        files = (out_dir, report, source_zip, ds, balanced, quality, spent_s, limits)
        try:
            added = self._write_once(files, report, quality)
        except BrokenProcessPool:  # a writer died (OOM kill): once more, on new writers
            try:
                added = self._write_once(files, report, quality)
            except BrokenProcessPool as exc:
                raise RuntimeError("the process writing this job's output files died") from exc
        report.setdefault("timings", {}).update(added)
        return added

    def _write_once(
        self, files: tuple, report: dict, quality: QualityResult | None
    ) -> dict[str, float]:
        from pipeline.html_report import CHARTS, chart_tasks

        with self._lock:
            pool = self._pool
        try:
            tasks = chart_tasks(report, quality)
            drawing = [(name, pool.submit(draw, arg)) for name, draw, arg in tasks]
            charts = dict.fromkeys(CHARTS) | {name: f.result() for name, f in drawing}
            return pool.submit(_write, *files, charts).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first thread to notice starts new writers
                    self._pool = self._start()
                    _discard(pool)
            raise

    def close(self) -> None:
        with self._lock:
            pool = self._pool
        if getattr(pool, "_broken", False):  # a writer died since the last job: see _discard
            _discard(pool)
        else:
            pool.shutdown(wait=True, cancel_futures=True)


def _discard(pool: ProcessPoolExecutor) -> None:
    """End a broken pool's surviving writers. Its manager thread stops them with SIGTERM, which
    writers ignore, and then waits for them: without a SIGKILL here that thread (and the
    worker's exit, which joins it) would wait for ever."""
    processes = getattr(pool, "_processes", None) or {}  # CPython's pid -> Process map
    for process in list(processes.values()):
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _ignore_stop_signals() -> None:
    """Ctrl-C or a TERM to the worker's process group must not kill the writers: a warm
    shutdown lets running jobs finish, their files included. Writers end when the worker does
    (their pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _import_writers() -> None:
    """Import the writers and draw one small chart: a process's first figure loads its fonts
    and renderer, which the first job's report would otherwise wait for. The writers' own
    module and those of the arguments it unpickles (torch with them)."""
    import pipeline.balance  # noqa: F401
    import pipeline.dataset  # noqa: F401
    import pipeline.outputs  # noqa: F401
    import pipeline.quality  # noqa: F401
    from pipeline.html_report import Figure, png_data_uri  # matplotlib, jinja2

    fig = Figure(figsize=(2, 1))
    ax = fig.subplots()
    ax.bar([0, 1], [1, 2])
    ax.set_title("warm-up 0.5")
    png_data_uri(fig)


def _write(*args: Any) -> dict[str, float]:
    from pipeline.outputs import write_outputs

    return write_outputs(*args)
