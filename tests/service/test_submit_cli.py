"""`balancer submit` against the real service: its exit codes (0 succeeded, 1 job failed,
2 refused or bad arguments, 3 unreachable), output and downloads. The command is a client,
so one backend is enough."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import FINISHED, QUICK, ROOT, Service
from .datasets import CLASS_SIZES, make_corrupt_image_zip, make_one_class_zip, make_zip

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("service", ["embedded"], indirect=True)]
QUICK_FLAGS = ["--preset", "quick", "--gan-iterations", str(QUICK["gan_iterations"])]
QUICK_FLAGS += ["--epochs", "1", "--seeds", "1"]


def submit(service: Service, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    return balancer(service, "submit", *args, key=key)


def balancer(service: Service, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = dict(service.env)
    env.pop("BALANCER_API_KEY", None)
    if key is not None:
        env["BALANCER_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_wait_and_out_succeed_with_exit_0(service: Service, tmp_path: Path) -> None:
    data = make_zip(tmp_path / "data.zip")
    out = tmp_path / "out"
    done = submit(
        service, str(data), "--url", service.base_url, "--wait", "--out", str(out),
        *QUICK_FLAGS, key=service.key,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0]
    assert len(job_id) == 36
    assert "succeeded" in done.stderr  # the progress bar's last state
    for name in CLASS_SIZES:  # the per-class table
        assert any(line.startswith(name) for line in done.stdout.splitlines())
    assert json.loads((out / "report.json").read_text())["config"]["gan_iterations"] == 20
    assert (out / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    with zipfile.ZipFile(out / "balanced.zip") as zf:
        assert "manifest.csv" in zf.namelist()
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_without_wait_prints_the_id_and_exits_0(service: Service, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    with zipfile.ZipFile(make_zip(tmp_path / "d.zip")) as zf:
        zf.extractall(folder)
    done = submit(service, str(folder), "--url", service.base_url, "--key", service.key)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert service.client.delete(f"/v1/jobs/{job_id}").status_code in (202, 204)


def test_a_failed_job_exits_1(service: Service, tmp_path: Path) -> None:
    bad = make_corrupt_image_zip(tmp_path / "bad.zip")
    done = submit(
        service, str(bad), "--url", service.base_url, "--wait", "--no-progress", *QUICK_FLAGS,
        key=service.key,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "failed" in done.stderr and "broken.png" in done.stderr


def test_refusals_and_bad_arguments_exit_2(service: Service, tmp_path: Path) -> None:
    one_class = make_one_class_zip(tmp_path / "one.zip")
    done = submit(service, str(one_class), "--url", service.base_url, key=service.key)
    assert done.returncode == 2
    assert "422" in done.stderr and "too_few_classes" in done.stderr
    data = make_zip(tmp_path / "data.zip")
    wrong_key = submit(service, str(data), "--url", service.base_url, key="gb_wrong")
    assert wrong_key.returncode == 2 and "401" in wrong_key.stderr
    assert submit(service, str(tmp_path / "nope.zip"), "--url", service.base_url).returncode == 2
    assert submit(service, str(data), "--url", service.base_url, "--epochs", "x").returncode == 2


def test_an_unreachable_service_exits_3(service: Service, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = make_zip(tmp_path / "data.zip")
    done = submit(service, str(data), "--url", f"http://127.0.0.1:{port}", key="gb_x")
    assert done.returncode == 3
    assert "cannot reach" in done.stderr


@pytest.mark.slow
def test_datasets_upload_list_delete_and_submit_by_id(service: Service, tmp_path: Path) -> None:
    url = ["--url", service.base_url]
    data = make_zip(tmp_path / "shapes.zip")
    uploaded = balancer(service, "datasets", "upload", str(data), *url, key=service.key)
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = uploaded.stdout.strip().splitlines()[-1]
    assert "shapes.zip" in uploaded.stdout and "circle: " in uploaded.stdout
    listed = balancer(service, "datasets", "list", *url, key=service.key)
    assert listed.returncode == 0, listed.stderr
    assert dataset_id in listed.stdout and "demo-mnist-1-2-3" in listed.stdout
    done = submit(service, "--dataset-id", dataset_id, *url, *QUICK_FLAGS, key=service.key)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert service.client.get(f"/v1/jobs/{job_id}").json()["dataset_id"] == dataset_id
    in_use = balancer(service, "datasets", "delete", dataset_id, *url, key=service.key)
    assert in_use.returncode == 2 and "409" in in_use.stderr
    service.client.delete(f"/v1/jobs/{job_id}")
    deadline = time.monotonic() + 300  # a running job stops at its next progress check
    while service.client.get(f"/v1/jobs/{job_id}").json().get("status") not in {*FINISHED, 404}:
        assert time.monotonic() < deadline, service.log_tail()
        time.sleep(0.2)
    deleted = balancer(service, "datasets", "delete", dataset_id, *url, key=service.key)
    assert deleted.returncode == 0, deleted.stderr
    both = submit(service, str(data), "--dataset-id", dataset_id, *url, key=service.key)
    assert both.returncode == 2 and "not both" in both.stderr
    bad = balancer(service, "datasets", "upload", str(make_one_class_zip(tmp_path / "o.zip")),
                   *url, key=service.key)  # fmt: skip
    assert bad.returncode == 2 and "too_few_classes" in bad.stderr
