"""A finished job's files: balanced.zip, samples.png, report.html and report.json, written
into a temporary folder and moved into place (report.json last: it marks done).

Its own module so that run.py (in the job's thread) and output_pool.py (in a writer process)
both import it, and neither imports the other.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.packaging import write_balanced_zip, write_samples_png

if TYPE_CHECKING:
    from pipeline.archive import ArchiveLimits
    from pipeline.balance import Balanced
    from pipeline.dataset import ImageDataset
    from pipeline.quality import QualityResult

# report.json last: it marks done
OUTPUT_FILES = ("balanced.zip", "samples.png", "report.html", "report.json")


def write_outputs(
    out_dir: Path,
    report: dict,
    source_zip: Path,
    ds: ImageDataset,
    balanced: Balanced,
    quality: QualityResult | None = None,
    spent_s: float | None = None,
    limits: ArchiveLimits | None = None,
    charts: dict[str, str | None] | None = None,
) -> dict[str, float]:
    """Write every output into a temporary folder beside out_dir, then move each into place.

    Sets report["timings"]["packaging_seconds"] (and "total_seconds": spent_s, the job's
    seconds before this call, plus this call's) before report.html and report.json are
    written, so both show the same timings (which leave out the drawing of report.html's
    charts). Returns those two timings (the caller's report, when this runs in another
    process, gets them from here). charts: report.html's charts, if drawn already.
    """
    from pipeline.html_report import write_html_report  # matplotlib: loaded only when needed

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=out_dir))
    try:
        t = time.perf_counter()
        synthetic = balanced.synthetic
        write_balanced_zip(tmp / "balanced.zip", Path(source_zip), ds, balanced, limits)
        write_samples_png(tmp / "samples.png", ds, synthetic)
        timings = report.setdefault("timings", {})
        added = {"packaging_seconds": time.perf_counter() - t}
        if spent_s is not None:
            added["total_seconds"] = spent_s + added["packaging_seconds"]
        timings.update(added)
        write_html_report(tmp / "report.html", report, ds, synthetic, quality, charts)
        _write_json(tmp / "report.json", report)
        for name in OUTPUT_FILES:
            (tmp / name).replace(out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return added


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)
