"""``brokerstack task-cost`` counts, on the servers, what one task asks of the broker and the
result backend: the counts that do not depend on the machine are asserted exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lab.experiments.task_cost import NODE_OPTIONS, Counters, RoundTrips, _per_task, measure_task_cost
from lab.harness.nodes import BrokerKind, BrokerNode, DriverName, make_node
from lab.harness.nodes.base import random_suffix
from lab.harness.settings import settings_for
from lab.harness.vendors.redis.vendor import redis_commands
from lab.report.task_cost import HEADER, load_task_cost, render_task_cost
from worker.celery_app import create_celery

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
    # ... each in one EVALSHA: two round trips per task, though the server counts eight commands.
    assert defaults["worker"]["backend_round_trips"]["median"] == 2.0
    assert fire_and_forget["worker"]["backend_round_trips"]["median"] == 0.0
    assert defaults["producer"]["backend_round_trips"]["median"] == 0.0
    # The watched drain is left out of the times and commands: one timed repetition, one range.
    assert defaults["worker"]["wall_ms"]["min"] == defaults["worker"]["wall_ms"]["max"]
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
    assert "| backend round trips / task |" in page
    # Eight commands (and a few hundredths of start-up), two round trips, in the defaults' worker row.
    row = next(line for line in page.splitlines() if line.startswith("| brokerstack's defaults | worker |"))
    cells = dict(zip(HEADER, row.strip(" |").split(" | "), strict=True))
    assert (cells["backend commands / task"][:3], cells["backend round trips / task"]) == ("8.0", "2.00"), row


def test_round_trips_leave_out_what_a_script_calls(results_node: BrokerNode) -> None:
    """One state stored by brokerstack's backend is one round trip (EVALSHA) and three commands
    inside it; Celery's own backend makes two (a GET, then MULTI SETEX PUBLISH EXEC in one write)."""
    from celery.backends.redis import RedisBackend

    settings = settings_for(results_node, results_node)
    url = settings.result_backend
    app = create_celery(settings, producer_only=True)
    try:
        backends = {"brokerstack": app.backend, "celery": RedisBackend(app=app, url=url)}
        for name, backend in backends.items():  # connected and the script loaded before counting
            backend.mark_as_done(f"round-trips-warm-{name}-{random_suffix()}", None)
        seen = {}
        with RoundTrips(url, ignore=Counters.OWN) as round_trips:
            for name, backend in backends.items():
                trips, commands = round_trips.count(), redis_commands(url)
                backend.mark_as_done(f"round-trips-{name}-{random_suffix()}", None)
                seen[name] = (round_trips.count() - trips, _per_task(commands, redis_commands(url), 1, Counters.OWN))
    finally:
        app.close()
    assert seen["brokerstack"] == (1, {"evalsha": 1.0, "get": 1.0, "setex": 1.0, "publish": 1.0})
    assert seen["celery"] == (2, {"get": 1.0, "multi": 1.0, "setex": 1.0, "publish": 1.0, "exec": 1.0})
