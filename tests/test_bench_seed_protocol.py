"""bench/seed_protocol.py: its statistics, its option pass-through, one tiny resumable run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import seed_protocol


def test_t_interval_of_paired_differences():
    lo, hi = seed_protocol.t_interval(np.array([0.1, 0.2, 0.3]))
    # mean 0.2, sd 0.1, n 3: t(0.975, 2) = 4.3027, so the half-width is 0.2484
    assert lo == pytest.approx(0.2 - 0.24841, abs=1e-4) and hi == pytest.approx(0.44841, abs=1e-4)
    assert seed_protocol.paired(np.array([0.5])) == "+0.500"  # one draw: no interval


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "colour=1"], "RunConfig has no option 'colour'"),
        (["--set", "epochs"], "--set wants KEY=VALUE"),
        (["--set", "epochs=0"], "epochs must be between"),
        (["--set", "classifier_augment=flip"], "classifier_augment must be one of"),
    ],
)
def test_bad_options_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        seed_protocol.main([*argv, "--device", "cpu"])
    assert message in capsys.readouterr().err


def test_tiny_run_writes_rows_and_resumes(tmp_path, capsys):
    out = tmp_path / "rows.json"
    argv = ["--dataset", "digits8", "--k", "1", "--draws", "1", "--preset", "quick"]
    argv += ["--gan-iterations", "5", "--epochs", "1", "--device", "cpu", "--json", str(out)]
    argv += ["--set", "seeds=2", "--classifier-augment", "none"]
    seed_protocol.main(argv)
    doc = json.loads(out.read_text())
    assert doc["settings"]["options"]["seeds"] == 2
    assert doc["settings"]["options"]["classifier_augment"] == "none"
    (row,) = doc["rows"]
    assert row["k"] == 1 and row["draw"] == 0 and row["classifier_augmentation"] == "none"
    for m in ("baseline", "oversample", "gan"):
        assert 0 <= row[m]["minority"] <= 1 and 0 <= row[m]["minority_precision"] <= 1
    assert "gan − oversample" in capsys.readouterr().out
    seed_protocol.main(argv)  # resumed: nothing left to run, the same rows
    assert "resuming" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == doc["rows"]
