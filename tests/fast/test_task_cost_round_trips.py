"""Issue 17 without a broker: the backend's wait is priced by its round trips, never by the commands
the server counted (a script's own calls are among them), and a profile without round trips says
so; the task-cost page shows the column, "—" for records made before it was counted. And the long
runs print their progress as lines on stderr, never on stdout."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import lab.experiments.bench as bench
import services.cli
from lab.cli import bench as bench_cli
from lab.experiments.bench import SCHEMA
from lab.experiments.bench.records import BenchRecord
from lab.experiments.bench.runner import Progress
from lab.report.peers import _bounds
from lab.report.sources import Sources
from lab.report.task_cost import HEADER, render_task_cost


def spread(value: float) -> dict[str, float]:
    return {"median": value, "min": value, "max": value}


def side(backend_ops: dict[str, float], trips: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cpu_ms": spread(2.0),
        "wall_ms": spread(2.5),
        "broker_ops": {"rpop": spread(10.0)},
        "backend_ops": {name: spread(v) for name, v in backend_ops.items()},
    }
    if trips is not None:
        out["backend_round_trips"] = spread(trips)
    return out


def task_cost_record(*, counted: bool) -> dict[str, Any]:
    """A redis/docker task-cost record; ``counted``: made since round trips are counted."""
    stored = {"evalsha": 2.0, "get": 2.0, "setex": 2.0, "publish": 2.0}
    return {
        "schema": "brokerstack.task-cost/1",
        "broker": "redis",
        "broker_version": "redis 8.0.2",
        "driver": "docker",
        "tasks": 1000,
        "repetitions": 3,
        "pool": "solo",
        "settings": {"prefetch_multiplier": 1},
        "backend_round_trip_ms": 0.1,
        "configs": {
            "defaults": {
                "producer": side({}, 0.0 if counted else None),
                "worker": side(stored, 2.0 if counted else None),
            },
            "fire_and_forget": {
                "producer": side({}, 0.0 if counted else None),
                "worker": side({}, 0.0 if counted else None),
            },
        },
    }


def peers_record() -> BenchRecord:
    """brokerstack's defaults at half Dramatiq's rate: the 0.8x goal missed."""
    rate = {"per_s_min": 990.0, "per_s_max": 1010.0, "repeats": 3}
    return BenchRecord.from_dict(
        {
            "schema": SCHEMA,
            "setup": "redis-everysec",
            "broker": "redis",
            "driver": "docker",
            "status": "completed",
            "peers": {
                "tasks": 1000,
                "repeats": 3,
                "systems": {"dramatiq_defaults": {"consume": {"per_s": 1000.0, **rate}}},
                "goals": {
                    "defaults_vs_dramatiq": {
                        "ours": "brokerstack_defaults",
                        "theirs": "dramatiq_defaults",
                        "goal": 0.8,
                        "ratio": 0.5,
                        "verdict": "missed",
                        "met": False,
                    }
                },
            },
        }
    )


def bounds(tmp_path: Path, cost: dict[str, Any]) -> str:
    (tmp_path / "task-cost").mkdir(exist_ok=True)
    (tmp_path / "task-cost" / "redis-docker.json").write_text(json.dumps(cost))
    [intro, _, line] = _bounds(Sources(root=tmp_path), [peers_record()])
    assert intro.startswith("What bounds brokerstack")
    return line


def test_the_backend_wait_is_priced_by_round_trips_not_commands(tmp_path: Path) -> None:
    line = bounds(tmp_path, task_cost_record(counted=True))
    # 2 round trips x 0.1 ms, not 8 commands x 0.1 ms.
    assert "2.0 result-backend round trips (8.0 commands" in line
    assert "at least 0.20 ms of waiting at 0.100 ms a round trip" in line
    assert "0.80 ms" not in line


def test_a_profile_without_round_trips_prices_no_wait(tmp_path: Path) -> None:
    line = bounds(tmp_path, task_cost_record(counted=False))
    assert "8.0 result-backend commands (round trips not counted in this profile)" in line
    assert "waiting" not in line


def test_the_page_shows_round_trips_and_a_dash_where_none_were_counted() -> None:
    column = HEADER.index("backend round trips / task")
    counted, old = task_cost_record(counted=True), task_cost_record(counted=False)
    old_copy = copy.deepcopy(old)

    # A start-up command with a subcommand (script|load) must not split its cell.
    counted["configs"]["defaults"]["worker"]["broker_ops"]["script|load"] = spread(0.1)

    def cells(record: dict[str, Any]) -> list[str]:
        rows = [line for line in render_task_cost([record]).splitlines() if line.startswith("| brokerstack's")]
        worker = next(row for row in rows if "| worker |" in row)
        found = [cell.strip() for cell in worker.strip("|").split("|")]
        assert len(found) == len(HEADER), worker
        return found

    assert cells(counted)[column] == "2.00"
    assert cells(counted)[HEADER.index("backend commands / task")].startswith("8.00: ")
    assert cells(old)[column] == "—"
    assert old == old_copy


def progress(step: int, message: str, phase: str = "peers") -> Progress:
    return Progress("redis-everysec", phase, message, step, 14, float(step * 10))


def test_each_finished_step_is_one_line_and_the_ticks_between_none() -> None:
    lines = bench_cli.StepLines()
    seen = [
        lines(progress(0, "starting redis-everysec nodes (docker)", "starting")),
        lines(progress(1, "nodes ready", "starting")),
        lines(progress(1, "brokerstack_defaults: draining 1000 tasks")),
        lines(progress(1, "drained 500/1000")),
        lines(progress(2, "brokerstack_defaults, repetition 1/3: 512.3 tasks/s")),
    ]
    assert seen == [
        None,
        "redis-everysec: [1/14, 10 s] starting: nodes ready",
        None,
        None,
        "redis-everysec: [2/14, 20 s] peers: brokerstack_defaults, repetition 1/3: 512.3 tasks/s",
    ]


def test_bench_prints_a_line_per_drain_on_stderr_and_only_the_records_on_stdout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record = {"setup": "redis-everysec", "status": "completed", "errors": []}

    def run_bench(setup: Any, params: Any, *, driver: Any, progress: Any, results: Any) -> dict[str, Any]:
        progress(Progress(setup.name, "starting", "starting redis-everysec nodes (docker)", 0, 3, 0.0))
        for k in (1, 2):
            progress(Progress(setup.name, "peers", f"celery_defaults: drained {k * 40}/100", k - 1, 3, 1.0))
            progress(Progress(setup.name, "peers", f"celery_defaults, repetition {k}/2: 9{k}.0 tasks/s", k, 3, 2.0))
        return record

    monkeypatch.setattr(bench, "run_bench", run_bench)
    monkeypatch.setattr(bench_cli, "_check_can_run", lambda driver, brokers: "process")
    argv = ["bench", "--section", "peers", "--setup", "redis-everysec", "--json", "--results-dir", str(tmp_path)]
    outcome = CliRunner().invoke(services.cli.app, argv, catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.stdout) == [record]
    assert "repetition" not in outcome.stdout
    drains = [line for line in outcome.stderr.splitlines() if "tasks/s" in line]
    assert drains == [
        "redis-everysec: [1/3, 2 s] peers: celery_defaults, repetition 1/2: 91.0 tasks/s",
        "redis-everysec: [2/3, 2 s] peers: celery_defaults, repetition 2/2: 92.0 tasks/s",
    ]
    assert "drained" not in outcome.stderr


def test_bench_by_default_measures_each_single_node_setup_and_no_high_availability_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The default run is what ``make measure`` publishes: one record per single-node setup. A
    Sentinel group or a 3-node cluster is measured by the failover and partition scenarios; a
    bench of one of its nodes would only repeat another setup's row."""
    measured: list[str] = []

    def run_bench(setup: Any, params: Any, *, driver: Any, progress: Any, results: Any) -> dict[str, Any]:
        measured.append(setup.name)
        return {"setup": setup.name, "status": "completed", "errors": []}

    monkeypatch.setattr(bench, "run_bench", run_bench)
    monkeypatch.setattr(bench_cli, "_check_can_run", lambda driver, brokers: "process")
    outcome = CliRunner().invoke(services.cli.app, ["bench", "--results-dir", str(tmp_path)], catch_exceptions=False)
    assert outcome.exit_code == 0, outcome.output
    assert measured == [
        "redis-volatile",
        "redis-everysec",
        "redis-always",
        "rabbitmq-confirms",
        "rabbitmq-noconfirm",
        "rabbitmq-quorum",
    ]
