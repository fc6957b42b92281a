"""The delayed-memory bench (lab.experiments.delayed_memory) at a small size: who holds waiting
delayed tasks. brokerstack's setups leave them all in the broker and none in the worker, on both
brokers; kombu's stock Redis transport hands every one of them to the worker at once."""

from __future__ import annotations

import pytest

from lab.experiments.delayed_memory import measure_once, summarize
from tests.conftest import BROKER_KINDS

# Slow: every case starts its own broker and worker (about a minute each on 2 cores); that waiting
# tasks stay out of the worker is asserted in CI by tests/integration/test_delayed.py.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

TASKS = 200


def _brokerstack_transport(kind: str) -> str | None:
    return "brokerstack" if kind == "redis" else None


@pytest.mark.parametrize("kind", BROKER_KINDS)
def test_waiting_tasks_stay_in_the_broker_not_in_the_worker(kind, driver):
    ticks: list[str] = []
    run = measure_once(
        kind, _brokerstack_transport(kind), driver=driver, tasks=TASKS, countdown=3600, tick=ticks.append
    )
    assert (run["waiting_in_broker"], run["held_by_worker"]) == (TASKS, 0)
    # Publishing reports its progress every 10 % (a 100,000-task run publishes for many minutes).
    published = [t.split(" in ")[0] for t in ticks if t.startswith("published")]
    assert published == [f"published {n} of {TASKS} ({100 * n // TASKS} %)" for n in range(20, TASKS + 1, 20)]
    assert run["before"]["worker_rss_bytes"] > 0 and run["after"]["broker_memory_bytes"] > 0
    summary = summarize([run], TASKS)
    growth = summary["worker_rss_bytes"]["growth"]["median"]
    assert growth == run["after"]["worker_rss_bytes"] - run["before"]["worker_rss_bytes"]


def test_kombus_stock_redis_transport_hands_every_waiting_task_to_the_worker(driver):
    run = measure_once("redis", "kombu", driver=driver, tasks=TASKS, countdown=3600)
    assert (run["waiting_in_broker"], run["held_by_worker"]) == (0, TASKS)
