"""report.html and the report's interval / verdict / quality sections, from a real small run."""

from __future__ import annotations

import json
import re

import pytest

from cli.pipeline_commands import format_report_table
from pipeline.config import RunConfig
from pipeline.demo import load_mnist_5k, write_digits_zip
from pipeline.filtering import FilterConfig
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
        generator="per-class",
        synthetic_share=1.0,
    )
    out = tmp / "out"
    # This tests the report of generated images, so every candidate passes the label check: a
    # judge trained for one epoch is too unsure for the strict 0.9 (tests/pipeline/
    # test_filtering.py tests the filter itself).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipeline.balance.FILTER", FilterConfig(min_prob=0.0))
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
    assert "class 1 vs oversampling + augmentation:" in table


def test_html_states_augmentation_and_leads_with_oversampling(run):
    out, report = run
    html = (out / "report.html").read_text()
    assert report["classifier_augmentation"]["resolved"] == "affine"
    assert (
        "Every classifier was trained with random rotation ±15°, scale 0.9–1.1, shift ±2 px" in html
    )
    assert "random oversampling + the same augmentation" in html
    # The GAN-vs-oversampling sentence comes before any other verdict on the page.
    d = report["comparisons"]["1"]["gan_vs_oversample"]
    lead = "The GAN beat" if d["verdict"] == "helped" else "The GAN did not beat"
    assert lead in html
    assert html.index(lead) < html.index("GAN vs baseline")
    assert "Precision:" in html


def _comparison_report(verdict: str, policy: str) -> dict:
    from pipeline.augment import augmentation_report

    figures = {
        "accuracy": 0.8,
        "balanced_accuracy": 0.8,
        "macro_f1": 0.8,
        "per_class": {n: {"accuracy": 0.8, "precision": 0.7, "f1": 0.75} for n in ("1", "2")},
        "confusion_matrix": [[8, 2], [2, 8]],
    }
    diff = {"difference": 0.1 if verdict == "helped" else -0.01, "verdict": verdict}
    diff |= {"difference_ci95": [0.05, 0.15] if verdict == "helped" else [-0.05, 0.03]}
    return {
        "dataset": {"name": "x.zip", "image_size": [8, 8], "channels": 1, "test_source": "split"},
        "classes": [
            {"name": "1", "train_count": 3, "synthetic_count": 7, "test_count": 10},
            {"name": "2", "train_count": 10, "synthetic_count": 0, "test_count": 10},
        ],
        "target": 10,
        "classifier_augmentation": augmentation_report(policy),
        "methods": {m: figures for m in ("baseline", "oversample", "gan")},
        "comparisons": {
            "1": {"test_count": 10, "gan_vs_baseline": diff, "gan_vs_oversample": diff}
        },
        "gan": {},
        "timings": {},
        "environment": {"device": "cpu"},
        "quality": {},
        "config": {"classifier_augment": policy},
    }


@pytest.mark.parametrize(
    ("verdict", "policy", "sentence"),
    [
        ("helped", "auto", "The GAN beat random oversampling + the same augmentation on class 1"),
        (
            "no clear difference",
            "affine+flip",
            "The GAN did not beat random oversampling + the same augmentation on class 1",
        ),
        ("hurt", "none", "The GAN did not beat random oversampling on class 1; it did worse"),
    ],
)
def test_lead_verdict_says_plainly_whether_gan_beat_oversampling(verdict, policy, sentence):
    report = _comparison_report(verdict, policy)
    html = render_html(report)
    assert sentence in html
    if policy == "none":
        assert "Every classifier was trained without augmentation." in html
        assert "same augmentation" not in html
    if policy == "affine+flip":
        assert "horizontal flips" in html and "(policy affine+flip" not in html
    table = format_report_table(report)
    assert ("the GAN did not beat it" in table) == (verdict != "helped")


def test_report_html_names_no_other_host_and_no_file(run):
    """Opened offline, or from the service under its strict CSP, the report needs nothing
    else: no URL of another host, no local file (charts and samples are data: URIs)."""
    from tests.offline import is_external, local_urls, page_urls

    urls = page_urls((run[0] / "report.html").read_text())
    assert [u for u in urls if is_external(u)] == []
    assert local_urls(urls) == []
    assert any(u.startswith("data:image/") for u in urls), "the parser saw no chart"
