"""CUDA must first be touched in the task's (forked) process, so the worker's parent process
must not even load torch; the API and the CLI start faster without it too."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.parametrize(
    "module", ["worker.celery_app", "worker.tasks", "app.main", "cli.service_commands"]
)
def test_module_does_not_import_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
