"""``brokerstack task-cost`` counts, on the servers, what one task asks of the broker and the
result backend: the counts that do not depend on the machine are asserted exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.experiments.task_cost import NODE_OPTIONS, measure_task_cost
from lab.harness.nodes import BrokerKind, DriverName, make_node
from lab.harness.nodes.base import random_suffix
from lab.harness.settings import settings_for
from lab.report.task_cost import load_task_cost, render_task_cost

pytestmark = pytest.mark.integration

TASKS = 60


def median(side: dict[str, Any], ops: str, name: str) -> float:
    value = side[ops].get(name)
    return value["median"] if value else 0.0


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_task_cost_counts_state_writes_and_deliveries(
    kind: BrokerKind, driver: DriverName, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROKERSTACK_RESULTS_DIR", str(tmp_path))
    with (
        make_node("redis", driver, name=f"task-cost-results-{random_suffix()}") as results,
        make_node(kind, driver, **NODE_OPTIONS[kind]) as broker,
    ):
        record = measure_task_cost(
            lambda overrides: settings_for(broker, results, **overrides), broker, tasks=TASKS, repetitions=1
        )
    defaults, fire_and_forget = record["configs"]["defaults"], record["configs"]["fire_and_forget"]
    # task_track_started and stored results: STARTED and SUCCESS, one SETEX each, per task.
    assert median(defaults["worker"], "backend_ops", "setex") == 2.0
    # Fire-and-forget stores nothing at all, and the producer never touches the backend.
    assert fire_and_forget["worker"]["backend_ops"] == {}
    assert defaults["producer"]["backend_ops"] == fire_and_forget["producer"]["backend_ops"] == {}
    if kind == "rabbitmq":
        for config in (defaults, fire_and_forget):
            assert median(config["worker"], "broker_ops", "deliver") == 1.0
            assert median(config["worker"], "broker_ops", "ack") == 1.0
            assert median(config["producer"], "broker_ops", "publish") >= 1.0
    else:
        for config in (defaults, fire_and_forget):
            assert median(config["producer"], "broker_ops", "lpush") >= 1.0
            # The ack: the message leaves the unacked hash and its index.
            assert median(config["worker"], "broker_ops", "hdel") == 1.0
    assert defaults["worker"]["cpu_ms"]["median"] > 0

    [loaded] = load_task_cost(tmp_path)
    page = render_task_cost([loaded])
    assert f"{TASKS} tasks x 1 repetitions" in page
    assert "setex 2.00" in page
