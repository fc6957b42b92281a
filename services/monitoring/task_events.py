"""Task and worker metrics from Celery's events, under the names the well-known Celery exporter
uses (``celery_task_*_total``, ``celery_task_runtime_seconds``, ``celery_worker_*``), so existing
dashboards and queries keep working.

Everything here is fed one event dict at a time (``handle``) and read at scrape time; it never
talks to the broker itself, so the fast tests drive it with plain dicts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from worker.topology import DEFAULT_QUEUE, TASK_ROUTES

#: Runtime buckets (seconds): from a trivial task to the default hard time limit (30 min).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
#: Tasks remembered between their events (sent -> received -> started -> finished). A task whose
#: last events were missed (the exporter was disconnected) is forgotten oldest first past this.
MAX_TRACKED_TASKS = 100_000
#: A worker is up while its last heartbeat is younger than this many heartbeat periods plus the
#: slack below (Celery's own State expires a worker after two periods; events take a moment).
HEARTBEAT_EXPIRY_PERIODS = 2.0
HEARTBEAT_SLACK_SECONDS = 3.0
#: A worker silent for this long is dropped from the worker series altogether (a replaced
#: container never comes back under its old host name).
FORGET_WORKER_AFTER_SECONDS = 3600.0
#: Label value for a task whose name or queue the exporter never learnt.
UNKNOWN = "unknown"

#: Events after which a task sends no more. Not task-rejected: a task that failed for good is rejected
#: (task_acks_on_failure is off, so the broker dead-letters it) and task-failed follows.
TERMINAL_EVENTS = ("task-succeeded", "task-failed", "task-revoked")


def queue_of(name: str) -> str:
    """The queue a task is routed to when its sender did not say (TASK_ROUTES, else default)."""
    return str(TASK_ROUTES.get(name, {}).get("queue", DEFAULT_QUEUE))


def exception_type(text: str | None) -> str:
    """``ValueError('bad input')`` -> ``ValueError``: the type only, so the label stays bounded."""
    if not text:
        return UNKNOWN
    return text.split("(", 1)[0].strip() or UNKNOWN


@dataclass
class TrackedTask:
    name: str = UNKNOWN
    queue: str = UNKNOWN
    #: When it was sent (or became due, for an ETA/countdown task); None if the exporter missed it.
    waiting_since: float | None = None
    started_at: float | None = None


@dataclass
class WorkerState:
    last_seen: float
    freq: float = 2.0
    active: int = 0
    offline: bool = False

    def up(self, now: float) -> bool:
        return (
            not self.offline and now - self.last_seen <= self.freq * HEARTBEAT_EXPIRY_PERIODS + HEARTBEAT_SLACK_SECONDS
        )


def _eta_seconds(eta: Any) -> float | None:
    if not eta:
        return None
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


class TaskEvents:
    """Counters from task events, and the worker and waiting state read at scrape time."""

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        task_labels = ["name", "hostname", "queue_name"]

        def counter(event: str, help_text: str, labels: list[str] = task_labels) -> Counter:
            return Counter(f"celery_task_{event}", help_text, labels, registry=registry)

        self.sent = counter("sent", "Tasks published (task-sent events; needs task_send_sent_event).")
        self.received = counter("received", "Tasks a worker received from the broker.")
        self.started = counter("started", "Tasks a worker started running.")
        self.succeeded = counter("succeeded", "Tasks that returned without raising.")
        self.failed = counter("failed", "Tasks that raised (retries used up).", [*task_labels, "exception"])
        self.retried = counter("retried", "Task runs that raised and were retried.")
        self.rejected = counter("rejected", "Messages a worker rejected (Reject, or not runnable).")
        self.revoked = counter("revoked", "Tasks revoked (terminated, or expired before running).")
        self.runtime = Histogram(
            "celery_task_runtime_seconds",
            "Seconds a task ran, succeeded or failed.",
            task_labels,
            buckets=RUNTIME_BUCKETS,
            registry=registry,
        )
        self._tasks: OrderedDict[str, TrackedTask] = OrderedDict()
        self._workers: dict[str, WorkerState] = {}
        self._lock = threading.Lock()

    # --- feeding ------------------------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("type", ""))
        with self._lock:
            if kind.startswith("worker-"):
                self._worker_event(kind, event)
            elif kind.startswith("task-"):
                self._task_event(kind, event)

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        hostname = str(event.get("hostname", UNKNOWN))
        seen = float(event.get("local_received") or self.clock())
        worker = self._workers.setdefault(hostname, WorkerState(last_seen=seen))
        worker.last_seen = seen
        worker.freq = float(event.get("freq") or worker.freq)
        worker.active = int(event.get("active") or 0)
        worker.offline = kind == "worker-offline"

    def _task(self, task_id: str) -> TrackedTask:
        task = self._tasks.get(task_id)
        if task is None:
            task = self._tasks[task_id] = TrackedTask()
            while len(self._tasks) > MAX_TRACKED_TASKS:
                self._tasks.popitem(last=False)
        return task

    def _task_event(self, kind: str, event: dict[str, Any]) -> None:
        task_id = str(event.get("uuid", ""))
        task = self._task(task_id)
        if event.get("name"):
            task.name = str(event["name"])
            if task.queue == UNKNOWN:
                task.queue = queue_of(task.name)
        if kind == "task-sent" and event.get("queue"):
            task.queue = str(event["queue"])
        hostname = str(event.get("hostname") or UNKNOWN)
        now = float(event.get("timestamp") or self.clock())
        labels = {"name": task.name, "hostname": hostname, "queue_name": task.queue}
        if kind == "task-sent":
            self.sent.labels(**labels).inc()
            eta = _eta_seconds(event.get("eta"))
            task.waiting_since = max(now, eta) if eta is not None else now
        elif kind == "task-received":
            self.received.labels(**labels).inc()
        elif kind == "task-started":
            self.started.labels(**labels).inc()
            task.started_at = now
            task.waiting_since = None
        elif kind == "task-succeeded":
            self.succeeded.labels(**labels).inc()
            runtime = event.get("runtime")
            self._observe_runtime(labels, float(runtime) if runtime is not None else None, task, now)
        elif kind == "task-failed":
            self.failed.labels(**labels, exception=exception_type(event.get("exception"))).inc()
            self._observe_runtime(labels, None, task, now)
        elif kind == "task-retried":
            self.retried.labels(**labels).inc()
        elif kind == "task-rejected":
            self.rejected.labels(**labels).inc()
            if not event.get("requeue"):
                task.waiting_since = None
        elif kind == "task-revoked":
            self.revoked.labels(**labels).inc()
        if kind in TERMINAL_EVENTS:
            self._tasks.pop(task_id, None)

    def _observe_runtime(self, labels: dict[str, str], runtime: float | None, task: TrackedTask, now: float) -> None:
        if runtime is None and task.started_at is not None:
            runtime = max(0.0, now - task.started_at)
        if runtime is not None:
            self.runtime.labels(**labels).observe(runtime)

    # --- reading ------------------------------------------------------------------------------

    def workers(self) -> list[tuple[str, bool, int]]:
        """(host name, up, active tasks) of every worker heard from lately."""
        now = self.clock()
        with self._lock:
            for hostname in [h for h, w in self._workers.items() if now - w.last_seen > FORGET_WORKER_AFTER_SECONDS]:
                del self._workers[hostname]
            return [(h, w.up(now), w.active if w.up(now) else 0) for h, w in sorted(self._workers.items())]

    def live_workers(self) -> int:
        return sum(up for _, up, _ in self.workers())

    def oldest_waiting(self, queues: Iterable[str]) -> dict[str, float]:
        """Per queue: seconds the oldest task sent to it (and due) has waited without starting."""
        now = self.clock()
        oldest = dict.fromkeys(queues, 0.0)
        with self._lock:
            for task in self._tasks.values():
                if task.waiting_since is not None and task.queue in oldest and task.waiting_since <= now:
                    oldest[task.queue] = max(oldest[task.queue], now - task.waiting_since)
        return oldest

    def forget_waiting(self, queue: str, before: float) -> None:
        """The broker and the workers hold nothing of ``queue``: whatever the exporter still
        counts as waiting there (sent before ``before``) had events it missed."""
        with self._lock:
            for task in self._tasks.values():
                if task.queue == queue and task.waiting_since is not None and task.waiting_since < before:
                    task.waiting_since = None
