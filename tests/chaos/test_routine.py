"""Routine operations (issue 9): a rolling deploy, a graceful broker restart while tasks run, a
worker killed while idle; and the soak mode. Where a setup promises ``lost == 0`` and
``duplicated == 0`` (Redis on brokerstack's transport, RabbitMQ with confirms) it is asserted;
kombu's transport is run beside it and reported.

The CI tier runs a few faults each; the ``slow`` tier the issue's size (>= 20 faults per scenario),
which is also what ``brokerstack chaos run`` measures for the records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.experiments.chaos import ChaosRun, Progress, RunOptions, RunRecord, load_records, summary_row

from .test_guarantees import assert_reported, chaos, counts_of

pytestmark = pytest.mark.chaos

EXACTLY_ONCE = "lost == 0, duplicated == 0"


def assert_exactly_once(record: RunRecord) -> None:
    counts = counts_of(record)
    assert record.guarantee == EXACTLY_ONCE, record.guarantee
    assert (counts.lost, counts.duplicated) == (0, 0), (counts, record.notes, record.faults)
    assert record.guarantee_held is True
    assert counts.guarded > 0 and counts.guarded_duplicated_effects == 0, counts  # the mix (issue 15)


# --- CI: a few faults each ---------------------------------------------------------------------------


def test_a_rolling_deploy_on_redis_loses_and_repeats_nothing(results: Path):
    record = chaos("rolling-deploy", "redis-everysec", results, tasks=24, kills=1)
    assert len(record.faults) == 2 and {f["round"] for f in record.faults} == {1}
    # A real warm shutdown: SIGTERM, the worker finished what it ran and exited by itself, with tasks running.
    assert all(f["action"] == "sigterm" and f["warm"] and f["exit_code"] == 0 for f in record.faults), record.faults
    assert sum(f["running"] for f in record.faults) >= 1
    assert all(f["finished_by_victim"] == f["running"] for f in record.faults), record.faults
    assert record.transport == "brokerstack" and record.parameters["transport"] == "brokerstack"
    assert_exactly_once(record)


def test_an_idle_worker_killed_right_after_its_last_task_leaves_nothing_to_run_again(results: Path):
    record = chaos("idle-kill", "redis-everysec", results, tasks=12, kills=3, visibility_timeout=5)
    assert len(record.faults) == 3
    for fault in record.faults:
        assert 0.05 <= fault["after_success_s"] <= 0.2 + 0.05, fault
        assert fault["waiting_in_queue"] == 0
    assert_exactly_once(record)


def test_a_graceful_rabbitmq_restart_while_tasks_run_loses_and_repeats_nothing(results: Path):
    record = chaos("broker-restart-mid-task", "rabbitmq-confirms", results, tasks=40, kills=1)
    assert len(record.faults) == 1 and record.faults[0]["running"] >= 1, record.faults
    assert record.transport is None and "transport" not in record.parameters
    assert_exactly_once(record)


def test_a_soak_stopped_by_ctrl_c_still_drains_and_counts(results: Path):
    interrupted: list[float] = []

    def ctrl_c_after_two_faults(progress: Progress) -> None:
        if progress.faults_done >= 2 and not interrupted:
            interrupted.append(progress.elapsed_s)
            raise KeyboardInterrupt

    options = RunOptions(duration=120, fault_interval=2.0, seed=5, visibility_timeout=5, rate=30)
    run = ChaosRun("worker-kill", "redis-volatile", options, progress=ctrl_c_after_two_faults, results=results)
    record = run.run()
    assert interrupted and interrupted[0] < 100
    assert record.status == "completed" and record.drained, record.notes
    assert record.details["soak"]["stopped_by"] == "interrupt" and record.details["soak"]["planned_s"] == 120
    assert len(record.faults) == 2 and all(f["target"] == "worker" for f in record.faults)
    assert counts_of(record).acknowledged > 0
    assert counts_of(record).lost == 0 and record.guarantee_held  # acks_late: a hard worker kill loses nothing
    assert_reported(record)
    [row] = [summary_row(r) for r in load_records(results)]
    assert row["mode"] == "soak" and row["lost_per_fault"] == 0.0


# --- slow: the size, both Redis transports and RabbitMQ in one table ------------------------------


ROUTINE = ("rolling-deploy", "broker-restart-mid-task", "idle-kill")
#: Tasks for >= 20 faults: rolling-deploy runs 10 rounds of 2 workers.
SIZES = {"rolling-deploy": (240, 10), "broker-restart-mid-task": (400, 20), "idle-kill": (200, 20)}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ROUTINE)
@pytest.mark.parametrize(("setup", "transport"), [("redis-everysec", "brokerstack"), ("rabbitmq-confirms", None)])
def test_routine_operations_at_size_lose_and_repeat_nothing(
    results: Path, scenario: str, setup: str, transport: str | None
):
    tasks, kills = SIZES[scenario]
    options = {"transport": transport} if transport else {}
    record = chaos(scenario, setup, results, tasks=tasks, kills=kills, visibility_timeout=10, **options)
    assert len(record.faults) >= 20
    assert_exactly_once(record)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ROUTINE)
def test_kombus_transport_is_measured_beside_ours(results: Path, scenario: str):
    tasks, kills = SIZES[scenario]
    record = chaos(scenario, "redis-everysec", results, tasks=tasks, kills=kills, transport="kombu")
    assert record.transport == "kombu" and record.guarantee is None and record.guarantee_held is None
    data = json.loads(record.path.read_text())  # type: ignore[union-attr]
    assert data["transport"] == "kombu"
    assert len(record.faults) >= 20
