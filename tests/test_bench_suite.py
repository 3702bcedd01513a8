"""bench/suite.py's bookkeeping: the task list, the paired summary, outcomes and regret."""

from __future__ import annotations

import pytest

from bench import suite


def _row(task: str, draw: int, over: float, auto: float, transfer: float) -> dict:
    fig = lambda b: {"balanced": b, "minority": b}  # noqa: E731
    return {
        "task": task,
        "draw": draw,
        "seconds": 1.0,
        "chosen": {"auto": {"generator": "transfer", "share": 0.5}},
        "oversample": fig(over),
        "auto": fig(auto),
        "transfer": fig(transfer),
    }


def test_task_list_covers_the_issue_shapes():
    tasks = suite.build_tasks()
    names = [t.name for t in tasks]
    assert len(names) == len(set(names))
    assert sum("/pair-" in n and n.startswith("mnist") for n in names) >= 12
    assert sum("/triplet-" in n and n.startswith("mnist") for n in names) >= 12
    assert {t.dataset for t in tasks} == {"mnist", "digits8", "photos", "textures"}
    assert [t.name for t in tasks if t.tuned] == ["mnist/seed-protocol-1-vs-2-3/k1"]
    # round-robin order keeps every task exactly once
    assert sorted(t.name for t in suite.run_order(tasks)) == sorted(names)


def test_summary_pairs_draws_and_classifies_outcomes():
    task = suite.build_tasks()[1]
    rows = [_row(task.name, d, 0.5, 0.5 + 0.10 + 0.01 * d, 0.5 - 0.10 - 0.01 * d) for d in range(5)]
    rows.append(_row(task.name + "-other", 0, 0.5, 0.5, 0.5))  # another task: not counted
    by = {e["generator"]: e for e in suite.summarise(rows, [task])}
    assert by["auto"]["draws"] == 5
    assert by["auto"]["balanced"]["diff"] == pytest.approx(0.12)
    assert by["auto"]["outcome"] == "win" and by["auto"]["auto_chose"] == {"transfer@0.5": 5}
    assert by["transfer"]["outcome"] == "loss"
    assert suite.summarise(rows[:1], [task]) == []  # one draw: no interval, no entry


def test_regret_is_the_gap_to_the_best_measured_setting():
    rows = [_row("t", 0, 0.6, 0.5, 0.7), _row("t", 1, 0.6, 0.6, 0.5)]
    r = suite.regret(rows, "auto")
    assert r["jobs"] == 2 and r["mean"] == pytest.approx(10.0) and r["as_good_as_best"] == 1
    assert suite.regret(rows, "transfer")["mean"] == pytest.approx(5.0)
