"""The task-events exporter: ``python -m services.monitoring.exporter [--port 9808]``.

One process per stack, beside the workers. It listens to the workers' events (task counts and
runtimes, worker heartbeats: services.monitoring.task_events) and every ``--interval`` seconds asks
the broker and the workers what is waiting where, and serves both on ``/metrics`` for Prometheus.
Everything goes through the Celery app the settings build, so it runs unchanged on RabbitMQ and on
Redis with brokerstack's own transport (which a stock exporter, reading the broker URL's scheme,
does not know).

What the poll asks:
- queue lengths: worker.inspection.queue_depths (the same numbers as the API's /metrics);
- who consumes what and what they hold: a broadcast to the workers (``active_queues``, ``active``,
  ``reserved``, ``scheduled``), the same on both brokers. With late acks, what a worker holds is
  exactly what the broker counts as unacked;
- dead letters by reason: the dead-letter store (worker.dead_letters), re-read only when its depth
  changed.

The container healthcheck is services.monitoring.healthcheck (healthy once events are consumed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.events.receiver import EventReceiver
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.monitoring.healthcheck import CONNECTED_METRIC
from services.monitoring.task_events import TaskEvents, queue_of
from worker.celery_app import create_celery, settings_or_exit
from worker.dead_letters import store_for
from worker.dead_letters.record import REASONS
from worker.inspection import queue_depths
from worker.topology import WORK_QUEUES

logger = logging.getLogger("brokerstack.exporter")

DEFAULT_PORT = 9808
#: Seconds between polls of the broker and the workers (EXPORTER_POLL_INTERVAL in the compose files).
DEFAULT_INTERVAL = 10.0
#: How long a broadcast waits for the workers' replies (it returns early once every live worker
#: answered).
INSPECT_TIMEOUT = 1.5
#: Dead letters read to count reasons; a deeper store reports the rest as reason "not_read".
DEAD_LETTER_SAMPLE = 1000
#: The event connection is retried this often in a row (backoff up to RECONNECT_MAX_SECONDS, about
#: an hour in all) before the exporter exits and the container's restart policy takes over.
MAX_RECONNECTS = 400
RECONNECT_MAX_SECONDS = 10.0


@dataclass
class Snapshot:
    """What the last poll found."""

    broker_up: bool = False
    depths: dict[str, int] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    unacked: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)
    poll_seconds: float = 0.0


def held_by_queue(replies: dict[str, Any] | None, key: str | None = None) -> Tally[str]:
    """Requests the workers hold (``active``/``reserved``; ``scheduled`` entries wrap theirs in
    ``request``), counted by the queue they came from."""
    held: Tally[str] = Tally()
    for requests in (replies or {}).values():
        for entry in requests or []:
            request = entry.get(key, {}) if key else entry
            routing_key = (request.get("delivery_info") or {}).get("routing_key")
            queue = routing_key if routing_key in WORK_QUEUES else queue_of(str(request.get("name") or ""))
            held[queue] += 1
    return held


def with_silent_workers(replies: dict[str, Any] | None, alive: set[str], last: dict[str, Any]) -> dict[str, Any]:
    """``active_queues`` replies, plus the last known queues of workers that are alive by their
    heartbeats but missed this broadcast's deadline (busy, or a slow host): a late reply must not
    read as "nobody consumes this queue". A worker that stopped says goodbye or stops beating."""
    merged = dict(replies or {})
    for hostname in alive - merged.keys():
        if hostname in last:
            merged[hostname] = last[hostname]
    return merged


def consumers_by_queue(replies: dict[str, Any] | None) -> Tally[str]:
    """How many workers consume each queue, from ``active_queues`` replies."""
    consumers: Tally[str] = Tally()
    for queues in (replies or {}).values():
        for queue in {q.get("name") for q in queues or []}:
            consumers[str(queue)] += 1
    return consumers


class Exporter(Collector):
    def __init__(self, app: Celery, interval: float = DEFAULT_INTERVAL) -> None:
        self.app = app
        self.interval = interval
        self.registry = CollectorRegistry()
        self.events = TaskEvents(self.registry)
        self.registry.register(self)
        self.snapshot = Snapshot()
        self.connected = False
        self._dead_letter_depth: int | None = None
        #: Each worker's queues as it last answered ``active_queues``.
        self._queues_of: dict[str, Any] = {}
        self._stop = threading.Event()

    # --- polling ------------------------------------------------------------------------------

    def poll(self) -> Snapshot:
        started = time.time()
        snap = Snapshot(dead_letters=self.snapshot.dead_letters)
        try:
            snap.depths = queue_depths(self.app)
            snap.broker_up = True
        except Exception as exc:  # noqa: BLE001 - any broker failure means "down" for this poll
            logger.warning("queue depths: %s", exc)
        if snap.broker_up:
            self._poll_workers(snap)
            self._poll_dead_letters(snap)
            for queue in WORK_QUEUES:
                if snap.depths.get(queue, 0) == 0 and snap.unacked.get(queue, 0) == 0:
                    self.events.forget_waiting(queue, before=started)
        snap.poll_seconds = time.time() - started
        self.snapshot = snap
        return snap

    def _poll_workers(self, snap: Snapshot) -> None:
        live = self.events.live_workers()
        inspect = self.app.control.inspect(timeout=INSPECT_TIMEOUT, limit=live or None)
        try:
            alive = {hostname for hostname, up, _ in self.events.workers() if up}
            self._queues_of = with_silent_workers(inspect.active_queues(), alive, self._queues_of)
            snap.consumers = dict(consumers_by_queue(self._queues_of))
            held = held_by_queue(inspect.active()) + held_by_queue(inspect.reserved())
            held += held_by_queue(inspect.scheduled(), key="request")
        except Exception as exc:  # noqa: BLE001 - a failed broadcast leaves these unknown, not zero
            logger.warning("inspecting the workers: %s", exc)
            snap.consumers, snap.unacked = self.snapshot.consumers, self.snapshot.unacked
            return
        snap.unacked = dict(held)

    def _poll_dead_letters(self, snap: Snapshot) -> None:
        try:
            store = store_for(self.app)
            depth = store.depth()
            if depth == self._dead_letter_depth:
                return
            reasons: Tally[str] = Tally(str(letter.reason) for letter in store.list_letters(limit=DEAD_LETTER_SAMPLE))
        except Exception as exc:  # noqa: BLE001 - keep the last counts; the next poll tries again
            logger.warning("dead letters: %s", exc)
            return
        if depth > sum(reasons.values()):
            reasons["not_read"] = depth - sum(reasons.values())
        snap.dead_letters = dict(reasons)
        self._dead_letter_depth = depth

    def poll_forever(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    # --- events -------------------------------------------------------------------------------

    def receive_forever(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                with self.app.connection_for_read() as conn:
                    receiver = _Receiver(self, conn, app=self.app, handlers={"*": self.events.handle})
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # broker gone: reconnect with backoff, bounded below
                # Consuming before this failure starts the count afresh.
                failures = 1 if self.connected else failures + 1
                self.connected = False
                if failures >= MAX_RECONNECTS:
                    raise SystemExit(f"exporter: no event connection after {failures} attempts: {exc}") from exc
                delay = min(RECONNECT_MAX_SECONDS, 0.5 * 2 ** min(failures, 5))
                logger.warning("event connection lost (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)

    def on_consuming(self) -> None:
        self.connected = True
        logger.info("consuming events")

    def stop(self) -> None:
        self._stop.set()

    # --- scraping -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        workers = self.events.workers()
        # Broker-side series are left out (not zeroed) while the broker does not answer.
        queues = WORK_QUEUES if snap.broker_up else ()
        oldest = self.events.oldest_waiting(queues)
        reasons = [*REASONS, *sorted(set(snap.dead_letters) - set(REASONS))] if snap.broker_up else []
        series: list[tuple[str, str, list[str], list[tuple[tuple[str, ...], float]]]] = [
            ("celery_worker_up", "1 while the worker's heartbeats arrive.", ["hostname"],
             [((h,), int(up)) for h, up, _ in workers]),
            ("celery_worker_tasks_active", "Tasks the worker is running (from its heartbeat).", ["hostname"],
             [((h,), active) for h, _, active in workers]),
            ("celery_queue_length", "Messages ready in the queue.", ["queue_name"],
             [((q,), snap.depths.get(q, 0)) for q in queues]),
            ("celery_active_worker_count", "Workers consuming the queue.", ["queue_name"],
             [((q,), snap.consumers.get(q, 0)) for q in queues]),
            ("brokerstack_queue_unacked",
             "Messages of the queue that workers hold unacked (running, prefetched or waiting for their ETA).",
             ["queue"], [((q,), snap.unacked.get(q, 0)) for q in queues]),
            ("brokerstack_queue_oldest_waiting_seconds",
             "Age of the oldest task sent to the queue (and due) that no worker has started.",
             ["queue"], [((q,), oldest[q]) for q in queues]),
            ("brokerstack_dead_letters_by_reason", "Dead letters in the store, by why they died.", ["reason"],
             [((r,), snap.dead_letters.get(r, 0)) for r in reasons]),
            ("brokerstack_exporter_broker_up", "1 if the exporter's last poll reached the broker.", [],
             [((), int(snap.broker_up))]),
            (CONNECTED_METRIC, "1 while the exporter consumes the workers' events.", [], [((), int(self.connected))]),
            ("brokerstack_exporter_poll_seconds", "How long the last poll of broker and workers took.", [],
             [((), snap.poll_seconds)]),
        ]  # fmt: skip
        for name, help_text, labels, samples in series:
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in samples:
                family.add_metric(list(values), value)
            yield family


class _Receiver(EventReceiver):
    """Celery's event receiver, telling the exporter once it consumes (its healthcheck waits for it)."""

    def __init__(self, exporter: Exporter, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exporter = exporter

    def on_consume_ready(self, *args: Any, **kwargs: Any) -> None:
        super().on_consume_ready(*args, **kwargs)
        self.exporter.on_consuming()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.monitoring.exporter", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--address", default="0.0.0.0")  # inside the container; the port is not published
    parser.add_argument(
        "--interval", type=float, default=float(os.environ.get("EXPORTER_POLL_INTERVAL") or DEFAULT_INTERVAL)
    )
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_celery(settings_or_exit(), main="exporter", producer_only=True)
    exporter = Exporter(app, interval=options.interval)
    # PID 1 in a container ignores SIGTERM unless it has a handler: stop at once on `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    start_http_server(options.port, options.address, registry=exporter.registry)
    threading.Thread(target=exporter.poll_forever, name="poll", daemon=True).start()
    logger.info("serving /metrics on %s:%d, polling every %g s", options.address, options.port, options.interval)
    exporter.receive_forever()


if __name__ == "__main__":
    main()
