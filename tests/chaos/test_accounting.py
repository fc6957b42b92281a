"""The accounting and the bookkeeping around it, on hand-made histories (no brokers)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab.experiments.chaos import (
    HEADLINE_COUNTS,
    SCENARIO_NAMES,
    SETUPS,
    Attempt,
    ChaosRun,
    Execution,
    RunOptions,
    account,
    applicable_pairs,
    load_history,
    load_records,
    parse_duration,
    save_history,
    summary_row,
)
from lab.experiments.chaos.load import Counter
from lab.experiments.chaos.record import RunRecord, write_record

pytestmark = pytest.mark.chaos


def attempt(index: int, task_id: str | None, outcome: str = "ok") -> Attempt:
    return Attempt(
        index=index,
        task_id=task_id,
        invoked_at=float(index),
        outcome=outcome,  # type: ignore[arg-type]
        completed_at=float(index) + 0.01,
    )


def run(task_id: str, *, finished: bool = True, redelivered: bool = False, t: float = 0.0) -> list[Execution]:
    entries = [Execution("start", task_id, worker="w1", redelivered=redelivered, t=t)]
    if finished:
        entries.append(Execution("finish", task_id, worker="w1", t=t + 0.1, state="SUCCESS"))
    return entries


def test_a_clean_history_counts_everything_once():
    attempts = [attempt(i, f"t{i}") for i in range(5)]
    executions = [e for i in range(5) for e in run(f"t{i}")]
    counts = account(attempts, executions)
    assert (counts.attempted, counts.acknowledged, counts.executed, counts.lost) == (5, 5, 5, 0)
    assert (counts.duplicated, counts.recovered, counts.unexpected) == (0, 0, 0)
    assert counts.executions == 5


def test_lost_is_acknowledged_but_never_executed():
    attempts = [attempt(0, "a"), attempt(1, "b"), attempt(2, "c")]
    executions = run("a") + run("b", finished=False)  # b started, its worker died, never again
    counts = account(attempts, executions)
    assert counts.lost == 2  # b and c
    assert counts.started_never_finished == 1
    assert counts.executed_acknowledged == 1


def test_duplicated_counts_ids_and_extra_runs_separately():
    attempts = [attempt(0, "a"), attempt(1, "b")]
    executions = run("a") + run("a", redelivered=True) + run("a", redelivered=True) + run("b")
    counts = account(attempts, executions)
    assert counts.duplicated == 1
    assert counts.extra_executions == 2
    assert counts.executions == 4
    assert counts.executed == 2
    assert counts.started_more_than_once == 1
    assert counts.redelivered_starts == 2


def test_a_redelivery_after_a_killed_run_is_not_a_duplicate():
    executions = run("a", finished=False) + run("a", redelivered=True, t=5)
    counts = account([attempt(0, "a")], executions)
    assert counts.duplicated == 0
    assert counts.started_more_than_once == 1
    assert counts.lost == 0


def test_recovered_is_executed_though_not_acknowledged():
    attempts = [attempt(0, "a", "fail"), attempt(1, "b", "fail"), attempt(2, "c")]
    counts = account(attempts, run("a") + run("c"))
    assert counts.recovered == 1
    assert counts.unacknowledged == 2
    assert counts.lost == 0
    assert counts.executed == 2


def test_unexpected_is_executed_but_never_attempted():
    counts = account([attempt(0, "a")], run("a") + run("zzz"))
    assert counts.unexpected == 1
    assert counts.executed == 1


def test_anonymous_refusals_explain_unknown_executions_up_to_their_number():
    # The API names the task id only in a 202: a 503 whose task was stored after all shows up as
    # an execution of an unknown id, and counts as recovered while refusals can explain it.
    attempts = [attempt(0, "a"), attempt(1, None, "fail"), attempt(2, None, "fail")]
    counts = account(attempts, run("a") + run("x") + run("y") + run("z"))
    assert counts.recovered == 2
    assert counts.unexpected == 1
    assert counts.executed == 3
    assert counts.attempted == 3


def test_pending_attempts_are_not_acknowledged():
    counts = account([attempt(0, "a", "pending")], [])
    assert counts.acknowledged == 0 and counts.lost == 0


def test_the_headline_identity_holds():
    attempts = [attempt(i, f"t{i}", "ok" if i % 3 else "fail") for i in range(30)]
    executions = [e for i in range(0, 30, 2) for e in run(f"t{i}")]
    counts = account(attempts, executions)
    assert counts.lost == counts.acknowledged - counts.executed_acknowledged
    assert counts.executed == counts.executed_acknowledged + counts.recovered


def test_history_round_trips_through_sqlite(tmp_path: Path):
    attempts = [attempt(0, "a"), attempt(1, None, "fail"), attempt(2, "c")]
    attempts[1].error = "HTTP 503: broker_unavailable"
    executions = run("a") + run("c") + run("c", redelivered=True)
    path = save_history(tmp_path / "h.sqlite", attempts, executions)
    history = load_history(path)
    assert account(history.attempts, history.executions) == account(attempts, executions)
    assert history.attempts[1].error == "HTTP 503: broker_unavailable"


def test_execution_entries_parse_what_the_worker_writes():
    raw = json.dumps(
        {
            "event": "start",
            "task_id": "x",
            "name": "worker.tasks.tools.noop",
            "worker": "w@h",
            "pid": 12,
            "attempt": 0,
            "redelivered": True,
            "t": 1.5,
        }
    )
    entry = Execution.from_json(raw)
    assert (entry.event, entry.task_id, entry.pid, entry.redelivered, entry.t) == ("start", "x", 12, True, 1.5)


def test_the_stream_is_held_at_its_limit_until_released():
    counter = Counter(10, limit=3)
    stop = threading.Event()
    assert [counter.take(stop) for _ in range(3)] == [0, 1, 2]
    taken: list[int | None] = []
    thread = threading.Thread(target=lambda: taken.append(counter.take(stop)))
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and not taken  # held
    counter.set_limit(5)
    thread.join(5)
    assert taken == [3]
    counter.release()
    assert [counter.take(stop) for _ in range(7)] == [4, 5, 6, 7, 8, 9, None]


def test_a_held_stream_lets_go_when_stopped():
    counter = Counter(10, limit=0)
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert counter.take(stop) is None
    assert time.monotonic() - started < 5


HA_SETUPS = ("redis-sentinel", "redis-sentinel-wait", "rabbitmq-quorum-cluster", "rabbitmq-classic-cluster")


def test_the_setups_and_scenarios_are_the_ones_the_issue_names():
    assert set(SETUPS) == {
        "redis-volatile",
        "redis-everysec",
        "redis-always",
        "rabbitmq-confirms",
        "rabbitmq-noconfirm",
        "rabbitmq-quorum",
        # issue 13: high availability
        "redis-sentinel",
        "redis-sentinel-wait",
        "rabbitmq-quorum-cluster",
        "rabbitmq-classic-cluster",
    }
    assert set(SCENARIO_NAMES) == {
        "broker-kill",
        "broker-restart",
        "worker-kill",
        "producer-outage",
        "node-loss",
        "publish-kill",
        "rolling-deploy",
        "broker-restart-mid-task",
        "idle-kill",
        "failover",
        "partition",
        "power-loss",
        "power-loss-node",
        "power-loss-all",
        # issue 14: delayed tasks
        "delayed",
    }
    pairs = applicable_pairs()
    assert [p for p in pairs if p[0] == "node-loss"] == [("node-loss", "rabbitmq-quorum")]
    routine = ("rolling-deploy", "broker-restart-mid-task", "idle-kill")
    single = [name for name in SETUPS if name not in HA_SETUPS]
    assert all((scenario, setup) in pairs for scenario in ("broker-kill", "worker-kill", *routine) for setup in single)
    # The HA setups run the HA scenarios, and only those.
    assert {p for p in pairs if p[1] in HA_SETUPS} == {(s, h) for s in ("failover", "partition") for h in HA_SETUPS}


def test_the_promises_are_what_each_setup_can_keep():
    # No persistence or no confirms: nothing promised for the broker's faults.
    for name in ("redis-volatile", "rabbitmq-noconfirm"):
        assert SETUPS[name].guarantee_for("broker-kill") is None
        assert SETUPS[name].guarantee_for("worker-kill") == "lost == 0"  # acks_late + reject_on_worker_lost
    for name in ("rabbitmq-confirms", "rabbitmq-quorum"):
        assert SETUPS[name].guarantee_for("broker-kill") == "lost == 0"
    assert SETUPS["rabbitmq-quorum"].guarantee_for("node-loss") == "lost == 0"
    for scenario in ("broker-kill", "broker-restart", "producer-outage", "publish-kill"):
        assert SETUPS["redis-always"].guarantee_for(scenario) == "lost == 0"
    assert SETUPS["redis-everysec"].guarantee_for("broker-restart") == "lost == 0"
    assert SETUPS["redis-everysec"].guarantee_for("broker-kill") is None  # a crash may lose the last second
    assert SETUPS["rabbitmq-quorum"].settings["rabbitmq_queue_type"] == "quorum"
    assert SETUPS["rabbitmq-noconfirm"].settings["rabbitmq_confirm_publish"] is False


def test_a_scenario_that_does_not_apply_is_refused():
    with pytest.raises(ValueError, match="does not apply"):
        ChaosRun("node-loss", "redis-always", RunOptions(driver="process"))
    with pytest.raises(ValueError, match="unknown setup"):
        ChaosRun("broker-kill", "redis-sometimes", RunOptions(driver="process"))


def test_fault_points_are_spread_seeded_and_inside_the_stream():
    def points_for(seed: int) -> list[int]:
        options = RunOptions(tasks=300, kills=3, seed=seed, driver="process")
        return ChaosRun("broker-kill", "redis-always", options).fault_points()

    points = points_for(7)
    assert points == points_for(7)
    assert len(points) == 3 and points == sorted(points) and all(0 < p < 300 for p in points)
    assert points[0] < 150 < points[2]


def test_the_automatic_rate_lets_the_load_span_the_faults():
    small = ChaosRun("broker-kill", "rabbitmq-confirms", RunOptions(tasks=300, kills=3, driver="process"))
    big = ChaosRun("broker-kill", "redis-always", RunOptions(tasks=50_000, kills=3, driver="process"))
    fixed = ChaosRun("broker-kill", "redis-always", RunOptions(tasks=300, kills=3, rate=42, driver="process"))
    assert small.options.rate == 10.0  # the floor: 300 tasks over ~40 s of faults
    assert big.options.rate == 200.0  # the ceiling
    assert fixed.options.rate == 42


def test_records_are_written_where_the_layout_says_and_read_back(tmp_path: Path):
    record = RunRecord(
        scenario="broker-kill",
        setup="redis-always",
        run_id="abcd1234",
        started_at="2026-01-02T03:04:05.000000Z",
        driver="docker",
        parameters={"tasks": 10},
    )
    record.counts = account([attempt(0, "a")], run("a"))
    record.status = "completed"
    path = write_record(record, tmp_path)
    assert path == tmp_path / "chaos/broker-kill/redis-always/20260102T030405Z-abcd1234.json"
    data = json.loads(path.read_text())
    assert all(isinstance(data["counts"][key], int) for key in HEADLINE_COUNTS)
    [loaded] = load_records(tmp_path)
    row = summary_row(loaded)
    assert (row["attempted"], row["lost"], row["scenario"]) == (1, 0, "broker-kill")


def test_task_ids_are_found_in_redis_aof_whoever_chose_them():
    from lab.experiments.chaos.runner import TASK_ID_IN_AOF

    aof = (
        b'*3\r\n$5\r\nLPUSH\r\n$7\r\ndefault\r\n$900\r\n{"headers": {"id": "chaos-0a1b2c3d-0000123", '
        b'"root_id": "6f1c2d3e-1111-2222-3333-444455556666"}} {"id": "chaos-0a1b2c3d-2-0000007"}'
    )
    assert set(TASK_ID_IN_AOF.findall(aof)) == {
        b"chaos-0a1b2c3d-0000123",
        b"6f1c2d3e-1111-2222-3333-444455556666",
        b"chaos-0a1b2c3d-2-0000007",
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20m", 1200),
        ("90s", 90),
        ("1h", 3600),
        ("1h30m", 5400),
        ("45", 45),
        ("2.5m", 150),
        ("1m 30s", 90),
        ("500ms", 0.5),
    ],
)
def test_soak_durations_parse(text: str, seconds: float):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "20x", "-5m", "0s", "1h foo", "20 minutes"])
def test_bad_durations_are_refused_with_the_accepted_forms(text: str):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_the_redis_transport_is_the_runs_and_is_recorded():
    kombu = ChaosRun("idle-kill", "redis-everysec", RunOptions(transport="kombu", driver="process"))
    assert kombu.record.transport == "kombu"
    assert kombu.settings_overrides()["redis_transport"] == "kombu"
    assert kombu.record.to_dict()["transport"] == "kombu"
    rabbit = ChaosRun("idle-kill", "rabbitmq-confirms", RunOptions(transport="kombu", driver="process"))
    assert rabbit.record.transport is None and "redis_transport" not in rabbit.settings_overrides()
    with pytest.raises(ValueError, match="transport"):
        RunOptions(transport="hiredis")


def test_only_worker_kill_soaks():
    assert ChaosRun("worker-kill", "redis-everysec", RunOptions(duration=60, driver="process")).faults_total >= 1
    with pytest.raises(ValueError, match="no soak mode"):
        ChaosRun("broker-kill", "redis-everysec", RunOptions(duration=60, driver="process"))


def test_kombus_transport_is_measured_not_promised_and_routine_operations_promise_no_duplicates():
    everysec, confirms = SETUPS["redis-everysec"], SETUPS["rabbitmq-confirms"]
    for scenario in ("rolling-deploy", "broker-restart-mid-task", "idle-kill"):
        assert everysec.guarantee_for(scenario) == "lost == 0, duplicated == 0"
        assert confirms.guarantee_for(scenario) == "lost == 0, duplicated == 0"
        assert everysec.guarantee_for(scenario, "kombu") is None
        assert confirms.guarantee_for(scenario, "kombu") == "lost == 0, duplicated == 0"  # no transport to pick
    # A graceful restart of a Redis without persistence empties it; without confirms a publish may vanish.
    assert SETUPS["redis-volatile"].guarantee_for("broker-restart-mid-task") is None
    assert SETUPS["rabbitmq-noconfirm"].guarantee_for("broker-restart-mid-task") is None
    assert SETUPS["rabbitmq-noconfirm"].guarantee_for("rolling-deploy") == "lost == 0, duplicated == 0"
    assert SETUPS["redis-everysec"].guarantee_for("worker-kill") == "lost == 0"


def _stored(tmp_path: Path, scenario: str, setup: str, run_id: str, stamp: str, **fields: Any) -> None:
    record = RunRecord(
        scenario=scenario,
        setup=setup,
        run_id=run_id,
        started_at=f"2026-01-02T03:04:{stamp}.000000Z",
        driver="process",
        parameters={"tasks": 10, **fields.pop("parameters", {})},
    )
    record.counts = account([attempt(0, "a")], run("a"))
    record.status = "completed"
    record.faults = [{"n": 1}, {"n": 2}]
    for key, value in fields.items():
        setattr(record, key, value)
    path = write_record(record, tmp_path)
    if "transport" not in fields:  # a record from before the transport was recorded
        data = json.loads(path.read_text())
        del data["transport"]
        path.write_text(json.dumps(data))


def test_both_transports_and_a_soak_appear_side_by_side_and_old_records_read_as_brokerstacks(tmp_path: Path):
    _stored(tmp_path, "worker-kill", "redis-everysec", "00000001", "01")
    _stored(tmp_path, "worker-kill", "redis-everysec", "00000002", "02", transport="kombu")
    _stored(
        tmp_path, "worker-kill", "redis-everysec", "00000003", "03", transport="kombu", parameters={"duration": 1200}
    )
    _stored(tmp_path, "worker-kill", "rabbitmq-confirms", "00000004", "04")
    rows = [summary_row(r) for r in load_records(tmp_path)]
    assert [(r["setup"], r["transport"], r["mode"]) for r in rows] == [
        ("rabbitmq-confirms", None, "fixed"),
        ("redis-everysec", "brokerstack", "fixed"),
        ("redis-everysec", "kombu", "fixed"),
        ("redis-everysec", "kombu", "soak"),
    ]
    assert rows[1]["lost_per_fault"] == 0.0 and rows[1]["faults"] == 2


def test_a_run_the_worker_terminated_is_not_an_execution():
    # Celery cancels a running acks_late task when its connection is lost (RabbitMQ requeues it):
    # the worker writes that finish without a state, and the task runs again from the requeued message.
    raw = json.dumps({"event": "finish", "task_id": "a", "state": None, "worker": "w@h", "t": 2.0})
    aborted = Execution.from_json(raw)
    assert aborted.event == "abort"
    assert Execution.from_json(json.dumps({"event": "finish", "task_id": "a", "state": "SUCCESS"})).event == "finish"
    executions = [Execution("start", "a"), aborted, *run("a", redelivered=True, t=5)]
    counts = account([attempt(0, "a")], executions)
    assert (counts.executions, counts.duplicated, counts.lost, counts.aborted) == (1, 0, 0, 1)
    assert counts.started_more_than_once == 1
