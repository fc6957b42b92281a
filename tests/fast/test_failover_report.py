"""The *Failover and partitions* section of docs/ops-comparison.md: several runs of one setup and
scenario (other seeds) are one row with the median and range, earlier runs on disk are read and
cited beside the newest, and the wait-cost record is rendered with its ranges and verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.experiments.chaos.record import SCHEMA, summary_row
from lab.experiments.wait_cost import WARMUP_TASKS, alternated
from lab.report.failover import WAIT_COST_SCHEMA, count_spread, failover_section, newest_wait_cost
from lab.report.render import Report
from lab.report.sources import load_sources


def _record(
    setup: str, lost: int, dup: int, *, scenario: str = "failover", run: str = "a", tasks: int = 5000, at: str = "08"
) -> dict[str, Any]:
    faults = [
        {"n": n, "leader_before": f"x-r{n - 1}", "leader_after": f"x-r{n}", "producer_recovery_s": float(n)}
        for n in (1, 2, 3)
    ]
    return {
        "schema": SCHEMA,
        "scenario": scenario,
        "setup": setup,
        "run_id": run,
        "status": "completed",
        "driver": "docker",
        "versions": {"broker": "redis 8"},
        "started_at": f"2026-11-29T{at}:00:00Z",
        "parameters": {"tasks": tasks, "kills": 3, "setup": {"broker": "redis"}},
        "counts": {"attempted": tasks, "acknowledged": tasks - 10, "lost": lost, "duplicated": dup, "recovered": 0},
        "faults": faults,
        "guarantee_held": None,
    }


class FakeReport:
    """The report's interface the section uses, over rows given directly (no results directory)."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.chaos_rows = [{**summary_row(r), "_record": r} for r in records]
        self.src = self

    def cite(self, record: dict[str, Any]) -> str:
        return f"[{record['run_id']}]"

    def _chart(self, draw: Any, data: Any, name: str) -> Path | None:
        return None


def _row(text: str, *cells: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| " + " | ".join(cells) + " |"))


def test_several_runs_of_a_pair_are_one_row_with_the_median_and_range():
    report = FakeReport(
        [
            _record("redis-sentinel", 5, 30, run="s1"),
            _record("redis-sentinel", 1, 10, run="s2"),
            _record("redis-sentinel", 3, 20, run="s3"),
            _record("redis-sentinel", 7, 0, scenario="partition", run="p1"),
        ]
    )
    text = failover_section(report)
    row = _row(text, "redis-sentinel", "failover")
    # 3 runs, 9 faults; lost median 3 of 1, 3, 5; duplicated 20 of 10-30; producer back 2 s (1-3) over the 9 faults.
    assert row.startswith("| redis-sentinel | failover | 3 | 9 | 4,990 | 3 (1-5) | 20 (10-30) | 0 |")
    assert "| 2.0 s (1.0-3.0) |" in row and "[s1], [s2], [s3]" in row
    assert "r0→r1, r1→r2, r2→r3; r0→r1" in row  # each run's leaders, run by run
    assert "| redis-sentinel | partition | 1 | 3 | 4,990 | 7 | 0 |" in text
    assert "Not measured yet" in text  # no results directory: no wait-cost record


def test_count_spread():
    assert count_spread([3, 1, 2]) == "2 (1-3)"
    assert count_spread([4, None]) == "4"
    assert count_spread([1, 2]) == "1.5 (1-2)"
    assert count_spread([None]) == "—"


def _write(root: Path, record: dict[str, Any]) -> None:
    path = (
        root / "chaos" / record["scenario"] / record["setup"] / f"{record['started_at'][:13]}-{record['run_id']}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def _wait_cost(root: Path) -> None:
    def rates(per_s: float, low: float, high: float) -> dict[str, Any]:
        return {"per_s": per_s, "per_s_min": low, "per_s_max": high}

    record = {
        "schema": WAIT_COST_SCHEMA,
        "started_at": "2026-11-29T11:00:00Z",
        "driver": "docker",
        "parameters": {"tasks": 3000, "repetitions": 3},
        "setups": {
            "redis-sentinel": {
                "barrier": {"min_replicas_to_write": 0, "min_replicas_max_lag": 10},
                "publish": rates(900, 850, 950),
                "drain": rates(300, 280, 310),
                "combined": rates(220, 210, 230),
            },
            "redis-sentinel-wait": {
                "barrier": {"min_replicas_to_write": 1, "min_replicas_max_lag": 2},
                "publish": rates(880, 800, 940),
                "drain": rates(305, 290, 320),
                "combined": rates(221, 205, 228),
                "error_replies": [{"ERR": 2}, {"NOREPLICAS": 3, "ERR": 2}, {}],
            },
        },
        "comparison": {
            key: {"ratio": 0.98, "ratio_of": "redis-sentinel-wait / redis-sentinel", "verdict": "no difference"}
            for key in ("publish", "drain", "combined")
        },
    }
    (root / "wait-cost").mkdir(parents=True)
    (root / "wait-cost" / "old.json").write_text(json.dumps({**record, "started_at": "2026-11-28T11:00:00Z"}))
    (root / "wait-cost" / "new.json").write_text(json.dumps(record))


def test_earlier_runs_of_the_same_size_on_disk_are_counted_and_cited(tmp_path):
    _write(tmp_path, _record("redis-sentinel-wait", 2, 4, run="w1", at="08"))
    _write(tmp_path, _record("redis-sentinel-wait", 0, 2, run="w2", at="09"))
    _write(tmp_path, _record("redis-sentinel-wait", 0, 1, run="w3", at="10"))
    # Another size is not a repetition, whatever its age.
    _write(tmp_path, _record("redis-sentinel-wait", 500, 0, run="small", tasks=1000, at="07"))
    _wait_cost(tmp_path)
    sources = load_sources(tmp_path)
    report = Report(sources, tmp_path / "ops.md", tmp_path / "img", draw_charts=False)
    text = failover_section(report)
    row = _row(text, "redis-sentinel-wait", "failover")
    assert "| 3 | 9 |" in row and "| 0 (0-2) | 2 (1-4) |" in row
    labels = [cell.strip("[] ") for cell in row.rstrip(" |").rsplit("|", 1)[-1].split(",")]
    assert len(labels) == 3 and all(label in sources.cited for label in labels)
    assert {sources.cited[label].path.name[-7:] for label in labels} == {"w1.json", "w2.json", "w3.json"}
    # The wait cost: the newest record, medians with ranges, the barrier each primary reported, cited.
    assert (
        "| redis-sentinel-wait | 1 / 2 s | 880/s (800-940) | 305/s (290-320) | 221/s (205-228) | 0, 3, 0 |  |" in text
    )
    # A record written before the refusals were counted says so rather than 0.
    assert "| redis-sentinel | 0 / 10 s | 900/s (850-950) | 300/s (280-310) | 220/s (210-230) | — | [W1] |" in text
    assert "publish + drain x0.98 (no difference)" in text
    assert sources.cited["W1"].path.name == "new.json"
    assert newest_wait_cost(tmp_path / "nowhere") is None


def test_the_wait_cost_alternates_the_setups():
    assert alternated(("a", "b"), 3) == ["a", "b", "b", "a", "a", "b"]
    assert WARMUP_TASKS > 0
