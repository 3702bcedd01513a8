"""A small run of bench/load.py (a real `balancer serve`): concurrent status polls and
uploads at once, with no error. The full-size run and its figures: docs/reliability.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .stack import ROOT, free_port, python_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_concurrent_polls_and_uploads_meet_no_error(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    cmd = [sys.executable, "bench/load.py", "--pollers", "50", "--polls", "4", "--uploads", "5"]
    cmd += ["--port", str(free_port()), "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env["PYTHONPATH"] = python_path()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    result = json.loads(out.read_text())
    assert result["polls"]["requests"] == 200 and result["polls"]["errors"] == 0
    assert result["uploads"]["requests"] == 5 and result["uploads"]["errors"] == 0
    assert result["cleanup_errors"] == 0
