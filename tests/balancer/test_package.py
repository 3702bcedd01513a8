"""The public `balancer` package: light import, the extra's ImportError, run() on a zip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import balancer
from tests.pipeline.zips import class_folder_files, write_zip


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_pulls_in_neither_imblearn_httpx_nor_torch():
    proc = python(
        "import sys, balancer\n"
        "print(sorted(m for m in ('imblearn', 'httpx', 'torch') if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert {"GANOverSampler", "Client", "run"} <= set(dir(balancer)) and balancer.__all__


def test_missing_imblearn_names_the_extra():
    proc = python(
        "import sys\n"
        "sys.modules['imblearn'] = None  # as if imbalanced-learn were not installed\n"
        "from balancer import GANOverSampler\n"
    )
    assert proc.returncode == 1
    assert "ImportError: GANOverSampler needs imbalanced-learn" in proc.stderr
    assert "pip install 'gan-balancer[imblearn]'" in proc.stderr


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'GanOverSampler'"):
        balancer.GanOverSampler  # noqa: B018


def test_run_balances_a_zip_with_run_config_options(tmp_path):
    dataset = write_zip(tmp_path / "data.zip", class_folder_files({"a": 20, "b": 5}))
    stages = []
    report = balancer.run(
        dataset,
        tmp_path / "out",
        progress=lambda stage, fraction: stages.append(stage),
        preset="quick",
        gan_iterations=20,
        epochs=1,
        seeds=1,
        device="cpu",
        evaluation="holdout",
    )
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["classes"] == report["classes"]
    counts = {
        c["name"]: c["train_count"] + c["synthetic_count"] + c["repeated_real_count"]
        for c in report["classes"]
    }
    assert counts == {"a": 16, "b": 16}  # 20 % of each class held out, b balanced to a
    assert report["config"]["gan_iterations"] == 20 and report["config"]["seeds"] == 1
    assert stages[0] == "validating" and stages[-1] == "packaging"
    assert {"balanced.zip", "report.html", "samples.png"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }


def test_run_refuses_an_unknown_option(tmp_path):
    with pytest.raises(ValueError, match="unknown config option"):
        balancer.run(tmp_path / "none.zip", tmp_path / "out", gan_iteration=20)
