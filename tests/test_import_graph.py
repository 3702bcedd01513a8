"""The layers hold (scripts/import_graph.py: no import upwards, no circle), and the check can
fail: a tree with a planted circle and a planted upward import is refused."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "import_graph.py"


def _load():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_repository_has_no_upward_import_and_no_circle() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: no upward import, no circle" in done.stdout


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_planted_circle_and_upward_import_are_found(tmp_path: Path) -> None:
    graph = _load()
    _write(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/a.py": "from pipeline import b\n",
            "pipeline/b.py": "def f():\n    from pipeline.a import x  # lazy, still a circle\n",
            "jobs/__init__.py": "",
            "jobs/state.py": "import pipeline.a\nfrom app.routes import r\n",  # upward
            "app/__init__.py": "",
            "app/routes.py": "from jobs import state\nfrom . import routes\n",
            "worker/__init__.py": "",
            "worker/tasks.py": "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from app.routes import r\n",  # same layer
        },
    )
    edges, problems = graph.check(tmp_path)
    assert "circle: pipeline.a <-> pipeline.b" in problems
    upward = [p for p in problems if p.startswith("upward import")]
    assert any("jobs.state" in p and "app.routes" in p for p in upward)
    assert any("worker.tasks" in p and "app.routes" in p for p in upward)
    assert len(upward) == 2, problems  # app -> jobs is downward: fine
    assert graph.main(["--root", str(tmp_path)]) == 1


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    graph = _load()
    _write(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/run.py": "import numpy\n",
            "jobs/__init__.py": "from pipeline.run import x\n",
            "cli/main.py": "import jobs\nfrom balancer import client\n",
            "balancer/__init__.py": "from pipeline import run\n",
        },
    )
    assert graph.check(tmp_path)[1] == []
