"""Priority on a backlog: 1,000 low-priority tasks, then 50 urgent ones, then a worker. Where the
urgent ones finish (their mean rank among completions) is measured per broker and queue type and
written to the results directory for the ops report."""

from __future__ import annotations

import statistics

import pytest

from lab.results import client_versions, write_record
from lab.stack import settings_for
from tests.helpers import wait_for
from worker.celery_app import create_celery
from worker.topology import PRIORITY_MAX, PRIORITY_MIN

pytestmark = pytest.mark.integration

BACKLOG = 1000
URGENT = 50
#: Mean rank if the urgent tasks finished first (0..49) and if they waited their turn (1000..1049).
IDEAL_MEAN_RANK = (URGENT - 1) / 2
FIFO_MEAN_RANK = BACKLOG + (URGENT - 1) / 2


def measure(settings, start_worker, broker) -> dict:
    app = create_celery(settings, producer_only=True)
    noop = app.tasks["worker.tasks.tools.noop"]
    with app.producer_or_acquire() as producer:  # one pooled connection for the whole backlog
        low = [noop.apply_async(priority=PRIORITY_MIN, producer=producer).id for _ in range(BACKLOG)]
        high = [noop.apply_async(priority=PRIORITY_MAX, producer=producer).id for _ in range(URGENT)]
    start_worker(settings, queues=["default"])  # solo, prefetch 1: the settings' defaults
    backend = app.backend
    wait_for(lambda: backend.get_task_meta(low[-1])["status"] == "SUCCESS"
             and all(backend.get_task_meta(t)["status"] == "SUCCESS" for t in high), 180, "the backlog to drain", 0.5)
    done_at = {t: backend.get_task_meta(t)["date_done"] for t in low + high}
    order = sorted(done_at, key=done_at.get)
    ranks = sorted(order.index(t) for t in high)
    record = {
        "broker": broker.kind,
        "broker_version": broker.version(),
        "queue_type": settings.rabbitmq_queue_type if broker.kind == "rabbitmq" else "redis-lists",
        "driver": broker.driver,
        "backlog_low": BACKLOG,
        "urgent_high": URGENT,
        "priorities": {"low": PRIORITY_MIN, "high": PRIORITY_MAX},
        "prefetch_multiplier": settings.worker_prefetch_multiplier,
        "mean_rank_high": statistics.mean(ranks),
        "ideal_mean_rank": IDEAL_MEAN_RANK,
        "fifo_mean_rank": FIFO_MEAN_RANK,
        "last_high_rank": ranks[-1],
        "ranks_high": ranks,
        "clients": client_versions(),
    }
    name = f"{broker.kind}-{record['queue_type']}-{broker.driver}"
    write_record("priority", name, record)
    app.close()
    return record


def test_priority_classic_and_redis(broker, settings, start_worker):
    record = measure(settings, start_worker, broker)
    # Strict priority with prefetch 1: at most the one message the worker took before the urgent
    # ones were visible to it can finish ahead of them.
    assert record["mean_rank_high"] <= IDEAL_MEAN_RANK + 1, record["ranks_high"]


@pytest.mark.parametrize("own_broker", ["rabbitmq"], indirect=True)
def test_priority_quorum(own_broker, results_node, start_worker):
    settings = settings_for(own_broker, results_node, rabbitmq_queue_type="quorum")
    record = measure(settings, start_worker, own_broker)
    major = int(own_broker.version().split()[-1].split(".")[0])
    if major >= 4:
        # Two levels, delivered high:normal 2:1 while both wait: the urgent ones are done within
        # about the first 75 completions, long before their FIFO turn.
        assert record["mean_rank_high"] < 3 * URGENT / 2, record["ranks_high"]
    else:
        # RabbitMQ 3.x quorum queues ignore priority: FIFO. Recorded, not promised.
        assert record["mean_rank_high"] > BACKLOG / 2, record["ranks_high"]
