"""report.html and the report's interval / verdict / quality sections, from a real small run."""

from __future__ import annotations

import json
import re

import pytest

from cli.pipeline_commands import format_report_table
from pipeline.config import RunConfig
from pipeline.demo import load_mnist_5k, write_digits_zip
from pipeline.html_report import render_html
from pipeline.statistics import VERDICTS


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Digits 1/2/3 with 8/40/40 training and 25 test images each; tiny iteration counts."""
    from pipeline.run import run_pipeline

    tmp = tmp_path_factory.mktemp("html")
    images, labels = load_mnist_5k()
    zip_path = tmp / "digits.zip"
    write_digits_zip(zip_path, images, labels, {1: 8, 2: 40, 3: 40}, test_per_class=25)
    cfg = RunConfig(
        preset="quick",
        gan_iterations=10,
        gan_width=8,
        gan_batch=16,
        epochs=1,
        seeds=2,
        device="cpu",
    )
    out = tmp / "out"
    report = run_pipeline(zip_path, out, cfg)
    return out, report


def test_outputs_are_all_written_and_nothing_partial_is_left(run):
    out, report = run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["balanced.zip", "report.html", "report.json", "samples.png"]
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))


def test_json_carries_intervals_verdicts_and_quality(run):
    _, report = run
    gan = report["methods"]["gan"]
    assert gan["seeds"] == 2
    for key in ("accuracy", "balanced_accuracy", "macro_f1"):
        lo, hi = gan[f"{key}_ci95"]
        assert lo <= gan[key] <= hi
    cell = gan["per_class"]["1"]
    assert cell["accuracy_ci95"][0] <= cell["accuracy"] <= cell["accuracy_ci95"][1]
    comp = report["comparisons"]["1"]
    assert set(report["comparisons"]) == {"1"} and comp["test_count"] == 25
    for other in ("baseline", "oversample"):
        d = comp[f"gan_vs_{other}"]
        assert d["verdict"] in VERDICTS and len(d["difference_ci95"]) == 2
    q = report["quality"]["1"]
    assert q["n_train"] == 8 and q["n_test"] == 25 and q["n_generated"] == 32
    assert q["frechet_distance"] is not None and 0 <= q["label_fidelity"] <= 1
    assert q["memorisation"]["mostly_copies"] in (True, False)
    assert report["statistics"]["draws"] == 2000
    assert "feature_space" in report["quality_method"]


def test_html_is_self_contained_with_table_charts_and_verdicts(run):
    out, report = run
    html = (out / "report.html").read_text()
    assert 'id="per-class-table"' in html
    charts = re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,', html)
    assert len(charts) >= 5  # accuracy, differences, confusion, memorisation, losses
    # Nothing is fetched from elsewhere: every image is inline, no scripts or stylesheets.
    assert not re.search(r'src="(?!data:)', html) and "<link" not in html
    for name in ("gan_vs_baseline", "gan_vs_oversample"):
        assert report["comparisons"]["1"][name]["verdict"] in html
    assert "Generated samples" in html and "nearest training image" in html
    assert "Fréchet" in html and "digits.zip" in html


def test_html_escapes_class_names():
    report = {
        "dataset": {
            "name": "x.zip",
            "image_size": [8, 8],
            "channels": 1,
            "test_source": "split",
            "warnings": [],
        },
        "classes": [
            {"name": "<b>cat</b>", "train_count": 2, "synthetic_count": 0, "test_count": 1}
        ],
        "target": 2,
        "methods": {
            "baseline": {
                "accuracy": 1.0,
                "balanced_accuracy": 1.0,
                "macro_f1": 1.0,
                "per_class": {"<b>cat</b>": {"accuracy": 1.0, "f1": 1.0}},
                "confusion_matrix": [[1]],
            }
        },
        "gan": {},
        "timings": {},
        "environment": {},
        "config": {},
    }
    html = render_html(report)
    assert "&lt;b&gt;cat&lt;/b&gt;" in html and "<b>cat</b>" not in html
    # A dataset with no class below the target: no comparison, and the page says why.
    assert "nothing to compare" in html and 'id="per-class-table"' in html


def test_cli_table_shows_intervals_and_verdicts(run):
    _, report = run
    table = format_report_table(report)
    assert re.search(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", table)
    assert "Did the GAN help?" in table
    verdict = report["comparisons"]["1"]["gan_vs_baseline"]["verdict"]
    assert f"class 1 vs baseline: {verdict}" in table
