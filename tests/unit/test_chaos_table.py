"""`brokerstack chaos table` shows the counts the runs exist for (lost, duplicated) at any width, and
ad-hoc runs keep their records out of the published results/."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lab.cli import chaos as chaos_cli
from lab.experiments.chaos import Attempt, Execution, RunRecord, account
from lab.experiments.chaos.record import write_record
from lab.harness.results import ADHOC_RESULTS_DIR, PUBLISHED_RESULTS_DIR, RESULTS_DIR_ENV

#: (scenario, setup, transport, lost, duplicated, duration): every kind of row the table prints.
ROWS = (
    ("broker-restart-mid-task", "redis-everysec", "brokerstack", 0, 0, None),
    ("broker-restart-mid-task", "redis-everysec", "kombu", 3, 17, None),
    ("publish-kill", "rabbitmq-noconfirm", None, 4321, 0, None),
    ("worker-kill", "redis-everysec", "kombu", 29, 8, 960.0),
)


def _write(root: Path) -> None:
    for number, (scenario, setup, transport, lost, duplicated, duration) in enumerate(ROWS, start=1):
        record = RunRecord(
            scenario=scenario,
            setup=setup,
            run_id=f"{number:08d}",
            started_at=f"2026-01-02T03:04:{number:02d}.0Z",
            driver="process",
            parameters={"tasks": 5000, "kills": 3, "duration": duration},
            transport=transport,
            versions={"broker": "redis 8.0"},
        )
        total = 5000
        attempts = [Attempt(index=i, task_id=f"t{i}", invoked_at=i, outcome="ok", completed_at=i) for i in range(total)]
        executions = [Execution("finish", f"t{i}") for i in range(lost, total)]
        executions += [Execution("finish", f"t{i}") for i in range(lost, lost + duplicated)]
        record.counts = account(attempts, executions)
        record.faults = [{"n": i} for i in range(3)]
        record.status = "completed"
        write_record(record, root)


def _table(root: Path, columns: int) -> str:
    result = CliRunner().invoke(
        chaos_cli.app, ["table", "--results-dir", str(root)], env={"COLUMNS": str(columns)}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("columns", [80, 100])
def test_a_narrow_terminal_shows_lost_and_duplicated_for_every_row(tmp_path: Path, columns: int):
    _write(tmp_path)
    out = _table(tmp_path, columns)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) <= columns
    for scenario, setup, transport, lost, duplicated, duration in ROWS:
        heading = f"{scenario}{' (soak)' if duration else ''} on {setup}, transport {transport or '-'}"
        assert heading in out, heading
        block = out.split(heading, 1)[1].split("\n", 2)[1]
        assert f"lost {lost}  duplicated {duplicated}  " in block, block


def test_a_wide_terminal_keeps_the_table(tmp_path: Path):
    _write(tmp_path)
    out = _table(tmp_path, 400)
    header = next(line for line in out.splitlines() if "scenario" in line)
    assert "lost" in header and "duplicated" in header
    assert "…" not in out
    assert "4321" in out and " 17 " in out


def test_ad_hoc_runs_go_to_results_tmp_and_published_ones_to_results(monkeypatch: pytest.MonkeyPatch):
    from lab.experiments.chaos import RunOptions

    monkeypatch.delenv(RESULTS_DIR_ENV, raising=False)
    where = chaos_cli._results_for
    assert where("broker-kill", RunOptions(tasks=300), None) == ADHOC_RESULTS_DIR
    assert where("broker-kill", RunOptions(tasks=5000), None) == PUBLISHED_RESULTS_DIR
    assert where("idle-kill", RunOptions(tasks=200, kills=20), None) == PUBLISHED_RESULTS_DIR
    assert where("idle-kill", RunOptions(tasks=200, kills=5), None) == ADHOC_RESULTS_DIR
    assert where("rolling-deploy", RunOptions(tasks=240, kills=10), None) == PUBLISHED_RESULTS_DIR
    soak = RunOptions(tasks=1000, duration=960.0, fault_interval=5.0)
    assert where("worker-kill", soak, None) == PUBLISHED_RESULTS_DIR
    assert where("worker-kill", RunOptions(tasks=1000, duration=60.0, fault_interval=5.0), None) == ADHOC_RESULTS_DIR
    assert where("broker-kill", RunOptions(tasks=300), Path("mine")) == Path("mine")
    monkeypatch.setenv(RESULTS_DIR_ENV, "/scratch")
    assert where("broker-kill", RunOptions(tasks=300), None) == Path("/scratch")
