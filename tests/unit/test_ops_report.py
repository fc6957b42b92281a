"""docs/ops-comparison.md is exactly what `brokerstack report` renders from the committed records,
so no number in it was typed or edited by hand, and every chart it links to is committed."""

from __future__ import annotations

import re
from pathlib import Path

from lab.report import Report, load_sources
from lab.report.render import PUBLISHED_MIN_CHAOS_TASKS

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ops-comparison.md"


def test_committed_ops_comparison_is_rendered_from_the_committed_results():
    sources = load_sources(REPO / "results", min_chaos_tasks=PUBLISHED_MIN_CHAOS_TASKS)
    assert sources.chaos and sources.bench and sources.priority
    rendered = Report(sources, DOC, DOC.parent / "img", draw_charts=False).render()
    assert DOC.read_text() == rendered, "docs/ops-comparison.md differs from its records: run `brokerstack report`"


def test_every_chart_the_doc_links_to_is_committed():
    charts = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text())
    assert charts
    for chart in charts:
        assert (DOC.parent / chart).is_file(), chart


def _chaos_record(
    root: Path,
    scenario: str,
    setup: str,
    run_id: str,
    *,
    transport: str | None = "brokerstack",
    duration: float | None = None,
    lost: int = 0,
) -> None:
    import json

    from lab.chaos import Attempt, Execution, RunRecord, account
    from lab.chaos.record import write_record

    record = RunRecord(
        scenario=scenario,
        setup=setup,
        run_id=run_id,
        started_at=f"2026-01-02T03:04:{run_id[-2:]}.0Z",
        driver="process",
        parameters={"tasks": 10, "kills": 4, "duration": duration},
        transport=transport,
        versions={"broker": "redis 8.0"},
    )
    attempts = [Attempt(index=i, task_id=f"t{i}", invoked_at=i, outcome="ok", completed_at=i) for i in range(10)]
    executions = [Execution("finish", f"t{i}") for i in range(lost, 10)]
    record.counts = account(attempts, executions)
    record.faults = [{"n": i} for i in range(4)]
    record.status = "completed"
    path = write_record(record, root)
    if transport == "old":  # written before records named their transport
        data = json.loads(path.read_text())
        del data["transport"]
        path.write_text(json.dumps(data))


def test_the_report_puts_kombus_transport_beside_ours_and_soaks_per_fault(tmp_path: Path):
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000001", transport="old")
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000002", transport="kombu", lost=1)
    _chaos_record(tmp_path, "worker-kill", "redis-everysec", "00000003", duration=1200.0)
    _chaos_record(tmp_path, "worker-kill", "redis-everysec", "00000004", transport="kombu", duration=1200.0, lost=2)
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    durability = text.split("## Durability", 1)[1].split("\n## ", 1)[0]
    assert "| setup | transport | scenario |" in durability
    assert "| redis-everysec | brokerstack | idle-kill | 4 | 10 | 10 | 0 |" in durability
    assert "| redis-everysec | kombu | idle-kill | 4 | 10 | 10 | 1 |" in durability
    assert "worker-kill" not in durability  # soaks have their own table
    soak = text.split("## Soak", 1)[1].split("\n## ", 1)[0]
    assert "0.14-0.20" in soak
    assert "| worker-kill | redis-everysec | brokerstack |" in soak and "| 0 | 0.000 |" in soak
    assert "| worker-kill | redis-everysec | kombu |" in soak and "| 2 | 0.500 |" in soak


def test_without_kombus_transport_the_durability_table_keeps_its_columns(tmp_path: Path):
    _chaos_record(tmp_path, "idle-kill", "redis-everysec", "00000001", transport="old")
    text = Report(load_sources(tmp_path), tmp_path / "doc.md", tmp_path / "img", draw_charts=False).render()
    assert "| setup | scenario | faults |" in text and "## Soak" not in text
