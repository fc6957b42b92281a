"""Delayed tasks through kills (issue 14): tasks with countdowns wait in the broker while it is killed
with ``kill -9`` and a worker is killed; a setup that promises ``lost == 0`` keeps every one of them,
and the record reports how late they ran.

Small runs (300 tasks, one broker kill and one worker kill) so CI stays within its budget; the CLI
runs the published ones (``brokerstack chaos run --scenario delayed --setup ... --tasks 10000
--kills 3``).
"""

from __future__ import annotations

import json

import pytest

from tests.chaos.test_guarantees import chaos, counts_of
from tests.conftest import BROKER_KINDS

pytestmark = pytest.mark.chaos

#: Per broker, a setup that promises lost == 0 for delayed tasks across broker kills (not
#: rabbitmq-confirms: its ladder of classic queues dead-letters at-most-once).
PROMISING = {"redis": "redis-always", "rabbitmq": "rabbitmq-quorum"}
#: Brokers whose run takes over a minute (RabbitMQ: its restart after the kill and the ladder's
#: whole-second delays stretch the run to 60 s on a quiet machine, 140 s on a busy one): kept out of
#: CI's suite, run with ``-m slow``.
SLOW = {"rabbitmq"}


@pytest.mark.parametrize(
    "broker_kind", [pytest.param(kind, marks=[pytest.mark.slow] if kind in SLOW else []) for kind in BROKER_KINDS]
)
def test_delayed_tasks_wait_through_broker_and_worker_kills_and_lateness_is_reported(results, broker_kind):
    record = chaos("delayed", PROMISING[broker_kind], results, tasks=300, kills=2)
    counts = counts_of(record)

    assert [f["target"] for f in record.faults] == ["broker", "worker"]
    # The kills came while tasks waited in the broker, and the killed broker still had them after.
    assert all(f["waiting_before"] for f in record.faults), record.faults
    assert record.faults[0]["waiting_after"], record.faults[0]
    # RabbitMQ: what the ladder holds beyond its ready count (stranded dead letters) is recorded.
    assert all((f["held_after"] is None) == (broker_kind == "redis") for f in record.faults), record.faults
    assert record.guarantee == "lost == 0" and record.guarantee_held is True
    assert counts.acknowledged == 300 and counts.lost == 0
    # The default stream's mix: guarded tasks wait in the broker too, and none has its effect twice.
    assert counts.guarded > 0 and counts.guarded_duplicated_effects == 0, counts

    late = json.loads(record.path.read_text())["timings"]["lateness_s"]  # type: ignore[union-attr]
    assert late["n"] == counts.executed_acknowledged
    assert late["early"] == 0, "a delayed task ran before it was due"
    assert late["min"] <= late["p50"] <= late["p99"] <= late["max"]
    # Nothing waits in a worker until due, so a task runs late only by an outage it was due in.
    assert late["max"] < record.faults[0]["down_s"] + 60, late
