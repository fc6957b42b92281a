"""The *Machine crash* section of docs/ops-comparison.md, from power-loss records, and the LazyFS
config the power-loss runs mount with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.experiments.chaos.record import summary_row
from lab.harness.nodes.lazyfs import render_config
from lab.report.power_loss import (
    everysec_power_loss,
    power_loss_answer,
    power_loss_opinions,
    power_loss_section,
    power_loss_use,
    spread,
)


def _record(setup: str, lost: int, *, scenario: str = "power-loss", held: bool | None = None, run: str = "a") -> dict:
    faults: list[dict[str, Any]] = [
        {"n": n, "restart_s": 1.0 + n, "aof_repair": ["fixed"] if n == 1 and lost else None} for n in (1, 2, 3)
    ]
    if lost > 50:
        faults[2]["not_booted"] = [{"node": "n1", "error": "not_a_dets_file"}]
    return {
        "scenario": scenario,
        "setup": setup,
        "run_id": run,
        "parameters": {"tasks": 5000, "kills": 3},
        "counts": {"attempted": 5000, "acknowledged": 5000, "executed_acknowledged": 5000 - lost, "lost": lost},
        "faults": faults,
        "guarantee_held": held,
        "status": "completed",
    }


class FakeReport:
    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.chaos_rows = [{**summary_row(r), "_record": r} for r in records]
        self.src = self

    def cite(self, record: dict[str, Any]) -> str:
        return f"[{record['run_id']}]"

    def _chart(self, draw: Any, data: list[dict[str, Any]], name: str) -> Path | None:
        return None


def _row(text: str, *cells: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| " + " | ".join(cells)))


def test_each_setup_gets_its_counts_the_median_and_range_of_several_runs_and_its_promise():
    report = FakeReport(
        [
            _record("redis-everysec", 100, run="e1"),
            _record("redis-everysec", 40, run="e2"),
            _record("redis-everysec", 70, run="e3"),
            _record("redis-always", 0, held=True, run="a1"),
            _record("rabbitmq-quorum", 0, scenario="power-loss-all", held=True, run="q1"),
            _record("redis-everysec", 5, scenario="broker-kill", run="other"),
        ]
    )
    text = power_loss_section(report)
    assert text.startswith("## Machine crash")
    everysec = _row(text, "redis-everysec", "power-loss")
    # lost: median 70 of the three runs, range 40-100; per cut 23.3 (13.3-33.3); 3 AOF repairs.
    assert "| 70 (40-100) |" in everysec and "(none promised)" in everysec and "[e1], [e2], [e3]" in everysec
    assert "| 3 | 2 |" in everysec  # AOF repairs in all three runs, two nodes that did not boot
    assert "| 0 |" in _row(text, "redis-always", "power-loss") and "| yes |" in _row(text, "redis-always")
    assert "| yes |" in _row(text, "rabbitmq-quorum", "power-loss-all")
    assert "[other]" not in text  # a broker-kill record is not a machine crash
    assert text.index("redis-always") < text.index("rabbitmq-quorum")  # the setups' order


def test_a_broken_promise_is_bold_and_no_records_say_how_to_make_them():
    text = power_loss_section(FakeReport([_record("rabbitmq-confirms", 2, held=False)]))
    assert "| **no** |" in _row(text, "rabbitmq-confirms")
    empty = power_loss_section(FakeReport([]))
    assert "No power-loss records yet" in empty and "--scenario power-loss" in empty


def test_spread_is_the_median_with_its_range():
    assert spread([3, 1, 2]) == "2 (1-3)"
    assert spread([None, 4]) == "4"
    assert spread([1.0, 2.0], unit=" s", digits=1) == "1.5 s (1.0-2.0)"
    assert spread([None]) == "—"


def test_lazyfs_never_evicts_and_names_its_fifo_and_log(tmp_path):
    config = render_config(fifo=tmp_path / "f.fifo", log=tmp_path / "l.log")
    # Eviction would write unsynced bytes through to disk, and a power cut would then lose less.
    assert "apply_eviction=false" in config
    assert f'fifo_path="{tmp_path / "f.fifo"}"' in config and f'logfile="{tmp_path / "l.log"}"' in config


def test_the_walkthrough_table_and_the_opinions_cite_the_power_loss_runs_counts():
    report = FakeReport(
        [
            _record("redis-everysec", 40, run="e1"),
            _record("redis-always", 0, held=True, run="a1"),
            _record("rabbitmq-noconfirm", 900, run="n1"),
            _record("rabbitmq-confirms", 0, held=True, run="c1"),
            _record("rabbitmq-quorum", 0, scenario="power-loss-all", held=True, run="q1"),
        ]
    )
    answer = power_loss_answer(report)
    assert answer.startswith("In a machine crash (power cut on LazyFS, 3 cuts per run): redis-everysec lost 40 of ")
    assert "redis-always lost 0 of 5,000 [a1]" in answer and "rabbitmq-quorum (`power-loss-all`) lost 0" in answer
    use = power_loss_use(report)
    assert "survived on redis-always, rabbitmq-confirms, rabbitmq-quorum and not on redis-everysec" in use
    assert "redis-everysec lost 40 of 5,000" in everysec_power_loss(report)
    assert "redis-always lost 0 of 5,000" in everysec_power_loss(report)
    confirms, quorum = power_loss_opinions(report)
    assert "rabbitmq-noconfirm lost 900 of 5,000" in confirms and "[c1]" in confirms
    # Kept here, yet promised nothing: the words follow the counts, the reason is always given.
    assert "promise nothing even where these runs lost nothing" in confirms
    assert "not fsynced" in confirms
    assert "Quorum queues fsync on a majority" in quorum and "lost 0 of 5,000" in quorum and "[q1]" in quorum
    # A loss is never worded as kept, and nothing measured means nothing claimed.
    broken = FakeReport(
        [
            _record("rabbitmq-quorum", 3, scenario="power-loss-all", held=False, run="q2"),
            _record("rabbitmq-noconfirm", 0, run="n2"),
            _record("rabbitmq-confirms", 23, run="c2"),
        ]
    )
    confirms, quorum = power_loss_opinions(broken)
    assert "not on classic queues, confirms or not" in confirms and "lost 23" in confirms
    assert "It did lose tasks here" in quorum
    assert power_loss_answer(FakeReport([])) == "" and power_loss_opinions(FakeReport([])) == []
    assert "not run yet" in everysec_power_loss(FakeReport([]))
