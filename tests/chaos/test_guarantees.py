"""What each broker setup promises, asserted on real brokers with kill -9; what it does not
promise, run and reported.

Small runs (a few hundred tasks, 1-3 faults) so the suite stays within minutes; the CLI runs the
big ones (``brokerstack chaos matrix --tasks 5000 --kills 3``). Every run goes through the same
library call as the CLI and writes its record under the test's results dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.experiments.chaos import HEADLINE_COUNTS, Counts, RunOptions, RunRecord, run_scenario

pytestmark = pytest.mark.chaos


def chaos(scenario: str, setup: str, results: Path, **options: object) -> RunRecord:
    options.setdefault("seed", 20261123)
    record = run_scenario(scenario, setup, RunOptions(**options), results=results)  # type: ignore[arg-type]
    assert record.status == "completed", record.error
    assert record.path is not None and record.path.is_file()
    assert_reported(record)
    return record


def assert_reported(record: RunRecord) -> None:
    """The counts are in the written record, duplicates included, and add up."""
    data = json.loads(record.path.read_text())  # type: ignore[union-attr]
    counts = data["counts"]
    for key in (*HEADLINE_COUNTS, "unexpected"):
        assert isinstance(counts[key], int) and counts[key] >= 0, (key, counts)
    assert counts["lost"] == counts["acknowledged"] - counts["executed_acknowledged"]
    assert counts["acknowledged"] <= counts["attempted"]
    assert data["versions"]["broker"] and data["parameters"]["seed"] is not None
    assert data["drained"] is True, data["notes"]
    # Issue 15: whatever the scenario and setup, a guarded task's effect happened at most once.
    assert counts.get("guarded_duplicated_effects", 0) == 0, counts


def counts_of(record: RunRecord) -> Counts:
    assert record.counts is not None, record.error
    return record.counts


def faults(record: RunRecord) -> int:
    return len(record.faults)


# --- promised: nothing acknowledged is lost ------------------------------------------------------------


def test_rabbitmq_with_confirms_loses_nothing_across_broker_kills(results):
    record = chaos("broker-kill", "rabbitmq-confirms", results, tasks=240, kills=3)
    assert faults(record) == 3
    assert record.guarantee == "lost == 0" and record.guarantee_held
    assert counts_of(record).lost == 0
    # Workers and producer came back by themselves after every kill.
    assert all(f["producer_recovery_s"] is not None and f["consumer_recovery_s"] is not None for f in record.faults)


def test_rabbitmq_quorum_loses_nothing_when_cluster_nodes_die(results):
    record = chaos("node-loss", "rabbitmq-quorum", results, tasks=240, kills=3)
    assert faults(record) == 3
    assert counts_of(record).lost == 0 and record.guarantee_held
    assert record.parameters["setup"]["settings"]["RABBITMQ_QUEUE_TYPE"] == "quorum"


def test_rabbitmq_with_confirms_keeps_a_burst_killed_right_after_publishing(results):
    record = chaos("publish-kill", "rabbitmq-confirms", results, tasks=2000, kills=1)
    assert counts_of(record).acknowledged == 2000
    assert counts_of(record).lost == 0
    assert record.faults[0]["kill_after_s"] < 0.5


@pytest.mark.parametrize("setup", ["redis-everysec", "rabbitmq-confirms"])
def test_worker_kills_lose_nothing_with_acks_late(results, setup):
    # Kill 1 takes the whole worker (acks_late: the broker gives the task to another worker),
    # kill 2 one pool process (reject_on_worker_lost: the worker gives it back).
    record = chaos(
        "worker-kill",
        setup,
        results,
        tasks=150,
        kills=2,
        kill_target="both",
        long_task_seconds=2.0,
        visibility_timeout=5,
    )
    assert [f["target"] for f in record.faults] == ["worker", "child"]
    assert counts_of(record).lost == 0 and record.guarantee_held
    assert all(f["interrupted"] >= 1 and f["redelivery_s"] is not None for f in record.faults)
    whole_worker = record.faults[0]["redelivery_s"]
    if setup.startswith("redis"):
        # Redis hands an abandoned message out again only after its visibility timeout.
        assert record.parameters["visibility_timeout"] == 5
        assert 5 - 2.0 <= whole_worker <= 5 + 1 + 10
    else:
        # RabbitMQ requeues a dead consumer's deliveries when its channel closes.
        assert whole_worker < 2.0 + 10


def test_the_api_never_acknowledges_a_task_it_did_not_store(results):
    record = chaos("producer-outage", "rabbitmq-confirms", results, tasks=200, kills=1, down_seconds=3)
    details = record.details
    assert details["refusals"] + details["transport_errors"] > 0, "the outage was not seen"
    assert counts_of(record).lost == 0 and record.guarantee_held
    # Every refusal came within PUBLISH_TIMEOUT (plus slack), and the API recovered unrestarted.
    assert details["refusals_over_bound"] == 0, details
    assert record.timings["recovery_s"]["missing"] == 0


# --- promised: Redis with the AOF fsynced on every write loses nothing either -------------------------------


def test_redis_always_loses_nothing_across_process_kills(results):
    record = chaos("broker-kill", "redis-always", results, tasks=300, kills=3)
    assert faults(record) == 3
    assert record.guarantee == "lost == 0" and record.guarantee_held
    assert counts_of(record).lost == 0
    # The evidence underneath: every acknowledged task is in Redis' append-only file.
    assert record.details["aof"]["acknowledged_not_in_aof"] == 0


def test_redis_everysec_loses_nothing_across_clean_restarts(results):
    record = chaos("broker-restart", "redis-everysec", results, tasks=200, kills=2)
    assert record.guarantee == "lost == 0" and record.guarantee_held
    assert counts_of(record).lost == 0
    assert record.details["aof"]["acknowledged_not_in_aof"] == 0


# --- nothing promised: run, and the losses are reported, whatever they are -------------------------------------


@pytest.mark.parametrize(
    ("scenario", "setup", "options"),
    [
        ("broker-kill", "redis-volatile", {"tasks": 200, "kills": 3}),
        ("publish-kill", "rabbitmq-noconfirm", {"tasks": 2000, "kills": 1}),
    ],
)
def test_setups_that_promise_nothing_report_what_they_lost(results, scenario, setup, options):
    record = chaos(scenario, setup, results, **options)
    assert record.guarantee is None and record.guarantee_held is None
    counts = counts_of(record)
    assert counts.lost == counts.acknowledged - counts.executed_acknowledged
    data = json.loads(record.path.read_text())  # type: ignore[union-attr]
    assert data["counts"]["lost"] == counts.lost and data["counts"]["duplicated"] == counts.duplicated
