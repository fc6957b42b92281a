"""Does priority work? A backlog of low-priority tasks, then a few urgent ones, then a worker:
where the urgent ones finish among all completions, per broker and queue type.

Used by tests/integration/test_priority.py and ``brokerstack priority``; each measurement is a
record in ``<results>/priority/`` that the ops report shows.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from lab.harness.nodes import BrokerNode
from lab.harness.processes import CeleryWorker
from lab.harness.results import client_versions, write_record
from worker.celery_app import create_celery
from worker.settings import Settings
from worker.topology import PRIORITY_MAX, PRIORITY_MIN

SCHEMA = "brokerstack.priority/1"
BACKLOG = 1000
URGENT = 50
#: Seconds to drain the backlog, at worst.
DRAIN_TIMEOUT = 300


def ideal_mean_rank(urgent: int = URGENT) -> float:
    """Mean rank if the urgent tasks finished first (ranks 0..urgent-1)."""
    return (urgent - 1) / 2


def fifo_mean_rank(backlog: int = BACKLOG, urgent: int = URGENT) -> float:
    """Mean rank if the urgent tasks waited their turn behind the backlog."""
    return backlog + (urgent - 1) / 2


def measure_priority(
    settings: Settings, broker: BrokerNode, *, backlog: int = BACKLOG, urgent: int = URGENT, log_dir: Path | None = None
) -> dict[str, Any]:
    """Enqueue ``backlog`` tasks at priority 0 and ``urgent`` at 9 with no worker running, start
    one (solo pool, the settings' prefetch), and rank the completions. Writes and returns the
    record."""
    app = create_celery(settings, producer_only=True)
    try:
        noop = app.tasks["worker.tasks.tools.noop"]
        with app.producer_or_acquire() as producer:  # one pooled connection for the whole backlog
            low = [noop.apply_async(priority=PRIORITY_MIN, producer=producer).id for _ in range(backlog)]
            high = [noop.apply_async(priority=PRIORITY_MAX, producer=producer).id for _ in range(urgent)]
        backend = app.backend
        with CeleryWorker(settings.to_env(), queues=["default"], log_dir=log_dir or Path(tempfile.mkdtemp())) as worker:
            worker.wait_ready()
            worker.wait_until(
                lambda: (
                    all(backend.get_task_meta(t)["status"] == "SUCCESS" for t in (low[-1], *high))
                    and all(backend.get_task_meta(t)["status"] == "SUCCESS" for t in low)
                ),
                DRAIN_TIMEOUT,
                "the backlog to drain",
            )
        done_at = {t: backend.get_task_meta(t)["date_done"] for t in low + high}
    finally:
        app.close()
    order = sorted(done_at, key=lambda t: done_at[t])
    ranks = sorted(order.index(t) for t in high)
    queue_type = broker.vendor.queue_label(settings)
    record = {
        "schema": SCHEMA,
        "broker": broker.kind,
        "broker_version": broker.version(),
        "queue_type": queue_type,
        "driver": broker.driver,
        "backlog_low": backlog,
        "urgent_high": urgent,
        "priorities": {"low": PRIORITY_MIN, "high": PRIORITY_MAX},
        "prefetch_multiplier": settings.worker_prefetch_multiplier,
        "mean_rank_high": statistics.mean(ranks),
        "ideal_mean_rank": ideal_mean_rank(urgent),
        "fifo_mean_rank": fifo_mean_rank(backlog, urgent),
        "last_high_rank": ranks[-1],
        "ranks_high": ranks,
        "clients": client_versions(),
    }
    record["path"] = str(write_record("priority", f"{broker.kind}-{queue_type}-{broker.driver}", record))
    return record
