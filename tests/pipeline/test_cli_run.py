"""End-to-end `balancer run` on small datasets on the CPU: outputs, counts, manifest, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from tests.pipeline.zips import class_folder_files, write_zip

FAST = ["--preset", "quick", "--gan-iterations", "30", "--epochs", "2", "--device", "cpu"]


def balancer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cli.main", *args]
    env = {**os.environ, **env} if env else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Explicit train/test layout, grayscale PNG, 3 classes with 40 / 12 / 5 training images."""
    tmp = tmp_path_factory.mktemp("gray")
    files = class_folder_files({"a": 40, "b": 12, "c": 5}, prefix="train/")
    files |= class_folder_files({"a": 6, "b": 6, "c": 6}, prefix="test/", seed=9)
    dataset = write_zip(tmp / "data.zip", files)
    return tmp / "out", balancer("run", str(dataset), "--out", str(tmp / "out"), *FAST)


def test_run_succeeds_and_prints_table(gray_run):
    out, proc = gray_run
    assert proc.returncode == 0, proc.stderr
    assert "baseline" in proc.stdout and "oversample" in proc.stdout and "gan" in proc.stdout
    assert {"balanced.zip", "report.json", "samples.png"} <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]


def test_report_fields(gray_run):
    out, _ = gray_run
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["image_size"] == [28, 28]
    assert report["dataset"]["channels"] == 1 and report["dataset"]["test_source"] == "explicit"
    rows = {c["name"]: c for c in report["classes"]}
    assert rows["a"] == {
        "name": "a",
        "train_count": 40,
        "synthetic_count": 0,
        "repeated_real_count": 0,
        "test_count": 6,
    }
    for name, need in (("b", 28), ("c", 35)):  # generated + repeated real = what was missing
        assert rows[name]["synthetic_count"] + rows[name]["repeated_real_count"] == need
    assert set(report["methods"]) == {"baseline", "oversample", "gan"}
    for m in report["methods"].values():
        assert (
            0 <= m["accuracy"] <= 1 and 0 <= m["balanced_accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1
        )
        assert set(m["per_class"]) == {"a", "b", "c"}
        assert len(m["confusion_matrix"]) == 3
        assert sum(map(sum, m["confusion_matrix"])) == pytest.approx(18)
    # generator auto: the proxy test chose a generator and a share, and the report says why.
    assert set(report["gan"]) == {"b", "c"}
    for name, info in report["gan"].items():
        sel = info["selection"]
        assert sel["chosen"] in ("per-class", "transfer", "translation")
        assert 0 <= sel["share"] <= 1 and sel["reason"]
        assert [w["class"] for w in sel["proxy_worlds"]] == ["a", "a"]  # the only big class
        assert len(sel["candidates"]) == 6  # 3 generators x shares 0.5 and 1
        assert info["synthetic"] == rows[name]["synthetic_count"]
        assert info["generator"] == ("oversample" if info["synthetic"] == 0 else sel["chosen"])
    assert report["timings"]["total_seconds"] > 0 and "torch" in report["environment"]
    assert report["config"]["gan_iterations"] == 30
    # Augmentation is on by default, and the report says which policy "auto" meant.
    assert report["config"]["classifier_augment"] == "auto"
    aug = report["classifier_augmentation"]
    assert aug["resolved"] == "affine" and aug["rotation_degrees"] == 15.0
    for m in report["methods"].values():
        assert all(0 <= c["precision"] <= 1 for c in m["per_class"].values())


def test_balanced_zip_counts_and_manifest(gray_run):
    out, _ = gray_run
    report = json.loads((out / "report.json").read_text())
    rows = {c["name"]: c for c in report["classes"]}
    with zipfile.ZipFile(out / "balanced.zip") as zf:
        names = [n for n in zf.namelist() if n != "manifest.csv"]
        per_class = Counter(n.split("/")[0] for n in names)
        assert per_class == {"a": 40, "b": 40, "c": 40}
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
        assert sorted(r["file"] for r in manifest) == sorted(names)
        origins = Counter((r["class"], r["origin"]) for r in manifest)
        for name, real in (("a", 40), ("b", 12), ("c", 5)):
            assert origins[(name, "real")] == real
            assert origins[(name, "synthetic")] == rows[name]["synthetic_count"]
            assert origins[(name, "oversampled")] == rows[name]["repeated_real_count"]
        real_files = {r["file"] for r in manifest if r["origin"] == "real"}
        for r in manifest:
            if r["origin"] == "oversampled":  # a copy, byte for byte, of a real file of its class
                assert r["source"] in real_files and r["source"].split("/")[0] == r["class"]
                assert zf.read(r["file"]) == zf.read(r["source"])
            elif r["origin"] == "synthetic":
                img = Image.open(io.BytesIO(zf.read(r["file"])))
                assert img.format == "PNG" and img.size == (28, 28) and img.mode == "L"
        assert not any(n.startswith("test/") for n in names)  # no test image leaks in


def test_share_zero_is_plain_oversampling(tmp_path):
    files = class_folder_files({"a": 20, "b": 4}, prefix="train/")
    files |= class_folder_files({"a": 4, "b": 4}, prefix="test/", seed=9)
    dataset = write_zip(tmp_path / "data.zip", files)
    proc = balancer(
        "run", str(dataset), "--out", str(tmp_path / "o"), *FAST, "--synthetic-share", "0"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["config"]["synthetic_share"] == 0
    b = report["gan"]["b"]
    assert b["generator"] == "oversample" and b["synthetic"] == 0 and b["repeated_real"] == 16
    with zipfile.ZipFile(tmp_path / "o" / "balanced.zip") as zf:
        manifest = list(csv.DictReader(io.StringIO(zf.read("manifest.csv").decode())))
    assert Counter(r["origin"] for r in manifest) == {"real": 24, "oversampled": 16}


def test_share_must_be_a_number_from_0_to_1(tmp_path):
    proc = balancer(
        "run", str(tmp_path / "x.zip"), "--out", str(tmp_path), "--synthetic-share", "2"
    )
    assert proc.returncode == 2 and "auto or a number from 0 to 1" in proc.stderr


def test_samples_png(gray_run):
    out, _ = gray_run
    img = Image.open(out / "samples.png")
    assert img.format == "PNG" and img.height > 100  # two row pairs: b and c


def test_rgb_split_layout_with_target(tmp_path):
    """Colour 40x30 JPEGs in <class>/ folders, 25 % split, target 20 per class, 32 px."""
    files = class_folder_files({"x": 20, "y": 8}, fmt="JPEG", mode="RGB", size=(40, 30))
    dataset = write_zip(tmp_path / "rgb.zip", files)
    args = ["--test-fraction", "0.25", "--target", "20", "--image-size", "32"]
    args += ["--evaluation", "holdout"]  # y's 2 held-out images would make auto cross-validate
    proc = balancer("run", str(dataset), "--out", str(tmp_path / "o"), *FAST, *args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["dataset"]["channels"] == 3 and report["dataset"]["image_size"] == [32, 32]
    rows = {c["name"]: c for c in report["classes"]}
    assert rows["x"]["train_count"] == 15 and rows["x"]["test_count"] == 5
    for name, need in (("x", 5), ("y", 14)):
        assert rows[name]["synthetic_count"] + rows[name]["repeated_real_count"] == need
    with zipfile.ZipFile(tmp_path / "o" / "balanced.zip") as zf:
        for syn in (n for n in zf.namelist() if "synthetic_" in n):
            assert Image.open(io.BytesIO(zf.read(syn))).mode == "RGB"


@pytest.mark.parametrize(
    "files,message",
    [
        (None, "not a readable zip"),
        ({"a/x.txt": b"hi"}, "no images"),
        ("one-class", "at least 2 classes"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path, files, message):
    path = tmp_path / "in.zip"
    if files is None:
        path.write_bytes(b"not a zip")
    elif files == "one-class":
        write_zip(path, class_folder_files({"solo": 4}))
    else:
        write_zip(path, files)
    proc = balancer("run", str(path), "--out", str(tmp_path / "o"), *FAST)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_classifier_augment_none_is_recorded(tmp_path):
    dataset = write_zip(tmp_path / "d.zip", class_folder_files({"a": 12, "b": 4}))
    out = tmp_path / "o"
    args = ["--classifier-augment", "none", "--evaluation", "holdout"]  # one run, not 5 folds
    proc = balancer("run", str(dataset), "--out", str(out), *FAST, *args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["classifier_augment"] == "none"
    assert report["classifier_augmentation"] == {
        "policy": "none",
        "resolved": "none",
        "description": "every classifier was trained without augmentation",
    }
    assert "trained without augmentation" in (out / "report.html").read_text()
    bad = balancer("run", str(dataset), "--out", str(out), "--classifier-augment", "flip")
    assert bad.returncode == 2 and "--classifier-augment: invalid choice" in bad.stderr


def test_bad_option_is_a_clear_error(tmp_path):
    dataset = write_zip(tmp_path / "d.zip", class_folder_files({"a": 4, "b": 4}))
    proc = balancer("run", str(dataset), "--out", str(tmp_path / "o"), "--image-size", "30")
    assert proc.returncode == 2 and "multiple of 4" in proc.stderr
    proc = balancer("run", str(dataset), "--out", str(tmp_path / "o"), "--generator", "gan")
    assert proc.returncode == 2 and "--generator: invalid choice: 'gan'" in proc.stderr


def test_transfer_generator_run_on_digits(tmp_path):
    """`--generator transfer` on MNIST digits 1/2/3 (40 / 3 / 8 training images), quick preset."""
    from bench.common import load_digits
    from pipeline.demo import write_digits_zip

    images, labels = load_digits()
    dataset = tmp_path / "digits.zip"
    write_digits_zip(dataset, images, labels, {1: 40, 2: 3, 3: 8}, test_per_class=5)
    out = tmp_path / "o"
    fast = [*FAST[:4], "--epochs", "1", "--device", "cpu"]
    # One thread: on a busy 2-core machine two threads made the registration 5x slower.
    one_thread = {"OMP_NUM_THREADS": "1"}
    proc = balancer(
        "run",
        str(dataset),
        "--out",
        str(out),
        *fast,
        *("--generator", "transfer", "--synthetic-share", "1"),
        env=one_thread,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["generator"] == "transfer"
    assert set(report["gan"]) == {"2", "3"}
    for name, need in (("2", 37), ("3", 32)):
        info = report["gan"][name]
        assert info["generator"] in ("transfer", "oversample")  # oversample: none passed
        assert info["generator_reason"] == "asked for (generator transfer, share 1)"
        f = info["filter"]
        assert f["candidates"] == 3 * need and f["kept"] + f["fallback_real"] == need
        assert f["candidates"] == f["rejected_label"] + f["rejected_copy"] + f["passed"]
        assert info["synthetic"] == f["kept"] and info["repeated_real"] == f["fallback_real"]
        assert info["variation_model"]["pairs"] == 256  # the quick preset's
        assert len(info["variation_model"]["registration_loss"]) == 100
    rows = {c["name"]: c["synthetic_count"] + c["repeated_real_count"] for c in report["classes"]}
    assert rows == {"1": 0, "2": 37, "3": 32}
    html = (out / "report.html").read_text()
    table = html[html.index('<table id="generators-table">') :]
    table = table[: table.index("</table>")]
    for name, need in (("2", 37), ("3", 32)):
        generator = report["gan"][name]["generator"]
        row = f'<td class="l">{name}</td><td class="l">{generator}</td>'
        assert row in table and f"<td>{3 * need}</td>" in table
