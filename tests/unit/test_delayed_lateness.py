"""Lateness of delayed tasks (issue 14) on hand-made histories, its place in a saved history, and the
report's *Delayed tasks* table (no brokers)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lab.experiments.chaos.ledger import (
    Attempt,
    Execution,
    ProducerLedger,
    lateness,
    load_history,
    percentile,
    save_history,
)
from lab.report.delayed import delayed_section


def delayed(index: int, due: float | None, outcome: str = "ok") -> Attempt:
    return Attempt(index, f"t{index}", invoked_at=0.0, outcome=outcome, completed_at=0.1, due_at=due)  # type: ignore[arg-type]


def start(task_id: str, t: float) -> Execution:
    return Execution("start", task_id, worker="w1", t=t)


def test_percentile_is_a_value_that_occurred_by_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0


def test_lateness_is_first_start_minus_due_over_acknowledged_delayed_tasks():
    attempts = [
        delayed(0, 10.0),
        delayed(1, 20.0),
        delayed(2, 30.0),
        delayed(3, 40.0, outcome="fail"),  # not acknowledged: not measured
        delayed(4, None),  # due at once: not measured
    ]
    executions = [
        start("t0", 10.5),
        start("t1", 25.0),  # 5 s late (a broker outage)
        start("t1", 26.0),  # a rerun does not make it later
        start("t2", 29.9),  # 0.1 s early
        start("t3", 41.0),
        start("t4", 1.0),
    ]
    late = lateness(attempts, executions, early_by=0.05)
    assert late is not None
    assert late.n == 3
    assert abs(late.min + 0.1) < 1e-9
    assert late.p50 == 0.5 and late.p99 == 5.0 and late.max == 5.0
    assert late.early == 1
    assert lateness(attempts, executions, early_by=0.2).early == 0  # type: ignore[union-attr]


def test_no_delayed_task_ran_means_no_lateness():
    assert lateness([delayed(0, 10.0)], []) is None
    assert lateness([delayed(0, None)], [start("t0", 1.0)]) is None


def test_due_times_are_kept_in_the_ledger_and_the_saved_history(tmp_path: Path):
    ledger = ProducerLedger()
    attempt = ledger.invoke("t0", "delayed", due_at=123.5)
    ledger.ok(attempt)
    ledger.ok(ledger.invoke("t1"))
    path = save_history(tmp_path / "history.sqlite", ledger.attempts(), [start("t0", 124.0)])
    history = load_history(path)
    assert [a.due_at for a in history.attempts] == [123.5, None]
    assert lateness(history.attempts, history.executions).p50 == 0.5  # type: ignore[union-attr]


def _row(
    setup: str, run_id: str, lost: int, duplicated: int, p99: float, held: bool | None, guarded_dup: int | None = None
) -> dict[str, Any]:
    record = {
        "counts": {} if guarded_dup is None else {"guarded": 500, "guarded_duplicated_effects": guarded_dup},
        "run_id": run_id,
        "started_at": run_id,
        "timings": {"lateness_s": {"p50": 0.04, "p99": p99, "max": p99 + 1}, "load_s": 20.0},
    }
    return {
        "scenario": "delayed",
        "setup": setup,
        "mode": "fixed",
        "acknowledged": 10000,
        "faults": 3,
        "lost": lost,
        "duplicated": duplicated,
        "held": held,
        "_record": record,
    }


def test_the_report_shows_lost_duplicated_and_lateness_per_setup_with_ranges():
    rows = [
        _row("rabbitmq-confirms", "r1", 0, 4, 10.0, True),
        _row("redis-volatile", "v1", 9000, 0, 0.9, None),
        _row("rabbitmq-confirms", "r2", 0, 6, 12.0, True, guarded_dup=0),
    ]
    report = SimpleNamespace(chaos_rows=rows, src=SimpleNamespace(cite=lambda r: f"[{r['run_id']}]"))
    text = delayed_section(report)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith(
        "| setup | runs | acknowledged | kills | lost | duplicated | guarded: duplicated effects | lateness p50 |"
    )
    # Setup order as in SETUPS (Redis first), several runs as the median with the range.
    # A run without guarded tasks (made before they were mixed in) shows none.
    assert lines[1].startswith("| redis-volatile | 1 | 10,000 | 3 | 9,000 | 0 | — | 0.04 s | 0.90 s | 1.90 s |")
    assert "(none promised)" in lines[1]
    assert lines[2].startswith(
        "| rabbitmq-confirms | 2 | 10,000 | 3 | 0 | 5 (4-6) | 0 | 0.04 s | 11.00 s (10.00-12.00) |"
    )
    assert lines[2].endswith("| 20.00 s | yes | [r1], [r2] |")


def test_without_records_the_section_says_how_to_make_them():
    report = SimpleNamespace(chaos_rows=[], src=SimpleNamespace(cite=str))
    assert "brokerstack chaos run --scenario delayed" in delayed_section(report)
