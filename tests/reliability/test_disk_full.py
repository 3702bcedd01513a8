"""The data directory fills up: the running job fails with a message saying so and leaves
nothing half-written, uploads are refused with 503 problem+json, and the service goes on
serving; once space is freed, it takes jobs again.

The job folders live on a 2 MiB tmpfs mounted for this test (we run as root in CI); the
SQLite files stay outside it, like a database on its own disk.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.datasets import make_zip

from .stack import FINISHED, TINY, Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
JOB_S = 240


@pytest.fixture
def small_jobs_disk(tmp_path: Path) -> Iterator[Path]:
    """DATA_DIR whose jobs/ and datasets/ folders share one 2 MiB tmpfs (links into it), as
    the job files and the stored uploads share one disk."""
    data_dir = tmp_path / "data"
    disk = tmp_path / "disk"
    disk.mkdir(parents=True)
    data_dir.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(disk)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {done.stderr}", pytrace=False)
    for name in ("jobs", "datasets"):
        (disk / name).mkdir()
        (data_dir / name).symlink_to(disk / name)
    try:
        yield data_dir
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(path: Path) -> int:
    """Write to `path` until the file system is full; returns the bytes written."""
    written, chunk = 0, b"\0" * 4096
    with path.open("wb", buffering=0) as out:
        try:
            while True:
                written += out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return written


def test_a_full_data_directory_fails_the_job_cleanly_and_the_service_keeps_serving(
    small_jobs_disk: Path, tmp_path: Path
) -> None:
    data = make_zip(tmp_path / "small.zip", {"a": 10, "b": 5}).read_bytes()
    stack = Stack(small_jobs_disk).prepare()
    filler = small_jobs_disk / "jobs" / "filler"
    try:
        stack.start_api()
        stack.start_worker()
        job_id = stack.submit(data, TINY)["id"]
        # The disk fills while the job runs: its outputs (written at the end) cannot be.
        assert fill(filler) > 0

        done = stack.wait_job(job_id, lambda j: j["status"] in FINISHED, "the job", JOB_S)
        assert done["status"] == "failed", done
        assert "ran out of disk space" in done["error"], done["error"]
        assert stack.job_folder(job_id) == [], "nothing half-written"
        assert stack.client.get(f"/v1/jobs/{job_id}/report").status_code == 409

        # Still serving: health, status, listing; an upload is refused, not a 500.
        assert stack.client.get("/healthz").status_code == 200
        assert stack.client.get("/readyz").status_code == 200
        assert stack.client.get("/v1/jobs").json()["total"] == 1
        files = {"dataset": ("d.zip", data, "application/zip")}
        refused = stack.client.post("/v1/jobs", files=files)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"].endswith("/storage-full")
        assert sorted(p.name for p in (small_jobs_disk / "jobs").iterdir()) == [
            job_id,
            "filler",
        ], "the refused upload left nothing behind"

        filler.unlink()
        again = stack.submit(data, TINY)["id"]  # space again: accepted
        assert stack.client.delete(f"/v1/jobs/{again}").status_code in (202, 204)
        assert stack.api is not None and stack.api.poll() is None
        assert all(w.poll() is None for w in stack.workers), "the worker survived it too"
    finally:
        stack.stop()
