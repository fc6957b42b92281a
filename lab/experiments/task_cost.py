"""Where one task's time goes: what the broker and the result backend are asked per task, and how
much of the worker's own time (CPU) it costs, for brokerstack's defaults and for fire-and-forget.

Counted on the servers, not guessed from the code: Redis' ``INFO commandstats`` (every command,
pipelined or not) on the broker and on the result backend, RabbitMQ's message counters (publish,
confirm, deliver, ack, ...) from its management API. The producer's share is counted while the
backlog is published (no worker running), the worker's while one solo worker drains it. Counts do
not depend on the machine's speed; times do, so every figure is a median of repetitions with its
range.

Used by ``brokerstack task-cost`` (records in ``<results>/task-cost/``) and
tests/integration/test_task_cost.py; lab.report.task_cost renders docs/task-cost.md from them.
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from lab.experiments.bench import e2e
from lab.experiments.bench.runner import declare_topology
from lab.harness.nodes import BrokerNode, proctree
from lab.harness.processes import CeleryWorker
from lab.harness.results import client_versions, machine, write_record
from lab.harness.vendors import VENDORS
from lab.harness.vendors.redis.vendor import redis_commands
from worker.celery_app import create_celery
from worker.settings import Settings

SCHEMA = "brokerstack.task-cost/1"
CATEGORY = "task-cost"
#: brokerstack's defaults as they ship, and fire-and-forget (no state stored, prefetch 16 as the
#: bench's throughput runs use).
CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "fire_and_forget": {"worker_prefetch_multiplier": 16},
}
TASKS = 1000
REPETITIONS = 3
#: The longest a drain of TASKS no-ops may take on a slow machine before the run is abandoned.
DRAIN_TIMEOUT = 300.0
#: PINGs timed to estimate one Redis round trip on this machine.
PINGS = 500


@dataclass
class Side:
    """What one side (producer or worker) cost per task in one repetition."""

    broker_ops: dict[str, float] = field(default_factory=dict)
    backend_ops: dict[str, float] = field(default_factory=dict)
    cpu_ms: float | None = None
    wall_ms: float | None = None


@dataclass
class Repetition:
    config: str
    producer: Side
    worker: Side


# --- counters read on the servers ---------------------------------------------------------------


def _per_task(before: dict[str, int], after: dict[str, int], tasks: int, ignore: tuple[str, ...]) -> dict[str, float]:
    deltas = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    return {name: round(d / tasks, 3) for name, d in sorted(deltas.items()) if d > 0 and name not in ignore}


def redis_round_trip_ms(url: str, pings: int = PINGS) -> float:
    """Median time of one PING from this process: what one more round trip costs here."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        times = []
        for _ in range(pings):
            t0 = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - t0)
    finally:
        client.close()
    return round(statistics.median(times) * 1000, 4)


#: What a broker node needs for its counters to be readable (its vendor says).
NODE_OPTIONS: dict[str, dict[str, Any]] = {name: v.counters_node_options for name, v in VENDORS.items()}


# --- one measurement ----------------------------------------------------------------------------------


class Counters:
    """Reads the broker's and the backend's counters; the reads themselves are left out."""

    #: What our own reads add: INFO for commandstats, PING for the round-trip probe.
    OWN = ("info", "ping", "flushdb", "client|setinfo", "client|setname", "hello")

    def __init__(self, broker: BrokerNode, backend_url: str) -> None:
        self.broker = broker
        self.backend_url = backend_url

    def read(self, **at_least: int) -> tuple[dict[str, int], dict[str, int]]:
        """The broker's and the backend's counters; ``at_least``: broker counters that must have
        reached these values (where the broker reports with a delay)."""
        # The result backend is Redis on every broker: its commands are counted the same way.
        return self.broker.vendor.counters(self.broker, at_least), redis_commands(self.backend_url)

    def side(self, before: Any, after: Any, tasks: int) -> Side:
        return Side(
            broker_ops=_per_task(before[0], after[0], tasks, self.OWN),
            backend_ops=_per_task(before[1], after[1], tasks, self.OWN),
        )


def measure_once(
    settings: Settings, broker: BrokerNode, config: str, tasks: int, log_dir: Path, tick: Callable[[str], None]
) -> Repetition:
    """Publish ``tasks`` no-ops with no worker running, then drain them with one solo worker.

    The drain's end is read from the worker's log (one ``succeeded`` line per task, written after
    its result is stored), so that nothing but the product talks to the servers while counting."""
    fire_and_forget = config == "fire_and_forget"
    app = create_celery(settings, producer_only=True)
    counters = Counters(broker, settings.result_backend)
    try:
        declare_topology(app)
        depth = e2e.QueueDepth(broker.kind, broker.url)
        try:
            depth.purge()
        finally:
            depth.close()
        before = counters.read()
        t0 = time.perf_counter()
        e2e.publish_backlog(app, tasks, tick=tick, ignore_result=fire_and_forget)
        publish_s = time.perf_counter() - t0
        published = counters.read(publish=before[0].get("publish", 0) + tasks)
        producer = counters.side(before, published, tasks)
        producer.wall_ms = round(publish_s * 1000 / tasks, 4)
        worker_side, span = drain_with_one_worker(settings, counters, published, tasks, log_dir, SUCCEEDED, tick)
        worker_side.wall_ms = round(span * 1000 / max(tasks - 1, 1), 4) if span is not None else None
    finally:
        app.close()
    _flush(settings.result_backend)
    return Repetition(config=config, producer=producer, worker=worker_side)


def succeeded_lines(task: str) -> re.Pattern[str]:
    """The worker's log line for one success of ``task`` (written after its result is stored)."""
    return re.compile(rf"Task {re.escape(task)}\[[^]]+\] succeeded in")


SUCCEEDED = succeeded_lines("worker.tasks.tools.noop")


def drain_with_one_worker(
    settings: Settings,
    counters: Counters,
    published: Any,
    tasks: int,
    log_dir: Path,
    succeeded: re.Pattern[str],
    tick: Callable[[str], None],
    label: str = "",
) -> tuple[Side, float | None]:
    """Drain the published backlog with one solo worker, its end read from the worker's log (one
    ``succeeded`` line per task), so that nothing but the product talks to the servers meanwhile.
    The worker side's operations and CPU per task, and the seconds from its first task received to
    its last succeeded (_log_span)."""
    # The worker's count starts before it does: its start-up commands are in it, spread over the
    # backlog (a few hundredths per task), rather than its first tasks left out.
    with CeleryWorker(settings.to_env(), queues=["default"], pool="solo", log_dir=log_dir) as worker:
        worker.wait_ready()
        assert worker.pid is not None
        cpu_ready = proctree.tree_usage(worker.pid)["cpu_seconds"]
        done_at_ready = len(succeeded.findall(worker.logs()))

        def drained() -> bool:
            done = len(succeeded.findall(worker.logs()))
            tick(f"{label}drained {done}/{tasks}")
            return done >= tasks

        worker.wait_until(drained, DRAIN_TIMEOUT, f"{label}{tasks} tasks to succeed")
        cpu_end = proctree.tree_usage(worker.pid)["cpu_seconds"]
        side = counters.side(published, counters.read(ack=published[0].get("ack", 0) + tasks), tasks)
        span = _log_span(worker.logs())
    side.cpu_ms = round((cpu_end - cpu_ready) * 1000 / max(tasks - done_at_ready, 1), 4)
    return side, span


LOG_TIME = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] Task \S+ (received|succeeded)", re.M
)


def _log_span(log: str) -> float | None:
    """Seconds from the first task received to the last one succeeded, by the worker's own clock."""
    stamps = [(datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f"), what) for when, what in LOG_TIME.findall(log)]
    received = [when for when, what in stamps if what == "received"]
    succeeded = [when for when, what in stamps if what == "succeeded"]
    if not received or not succeeded:
        return None
    return (max(succeeded) - min(received)).total_seconds()


def _flush(url: str) -> None:
    """The next repetition counts its own results (the results node is this measurement's alone)."""
    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()


def measure_task_cost(
    settings_for_config: Callable[[dict[str, Any]], Settings],
    broker: BrokerNode,
    *,
    tasks: int = TASKS,
    repetitions: int = REPETITIONS,
    tick: Callable[[str], None] = lambda _: None,
    write: bool = True,
) -> dict[str, Any]:
    """Every configuration ``repetitions`` times, alternated (defaults, fire-and-forget, defaults,
    ...) so a drift of the machine hits both alike; returns (and writes) the record."""
    log_dir = Path(tempfile.mkdtemp(prefix="brokerstack-task-cost-"))
    runs: list[Repetition] = []
    for n in range(repetitions):
        for config, overrides in CONFIGS.items():
            tick(f"{broker.kind} {config}: repetition {n + 1}/{repetitions}")
            runs.append(measure_once(settings_for_config(overrides), broker, config, tasks, log_dir, tick))
    settings = settings_for_config({})
    record = {
        "schema": SCHEMA,
        "broker": broker.kind,
        "broker_version": broker.version(),
        "driver": broker.driver,
        "tasks": tasks,
        "repetitions": repetitions,
        "pool": "solo",
        "settings": {
            "prefetch_multiplier": settings.worker_prefetch_multiplier,
            "acks_late": True,
            "results_stored": {"defaults": True, "fire_and_forget": False},
        },
        "backend_round_trip_ms": redis_round_trip_ms(settings.result_backend),
        "configs": {config: summarize([r for r in runs if r.config == config]) for config in CONFIGS},
        "result_store": result_store_comparison(settings, repetitions=repetitions),
        "runs": [asdict(r) for r in runs],
        "clients": client_versions(),
        "machine": machine(),
    }
    if write:
        record["path"] = str(write_record(CATEGORY, f"{broker.kind}-{broker.driver}", record))
    return record


#: Stores timed per backend and repetition in the side-by-side comparison of the result store.
STORES = 2000


def result_store_comparison(settings: Settings, stores: int = STORES, repetitions: int = REPETITIONS) -> dict[str, Any]:
    """Microseconds per SUCCESS stored: Celery's own Redis backend beside brokerstack's (one
    EVALSHA instead of a GET and a MULTI/EXEC), alternated in the same run on the same server."""
    from celery.backends.redis import RedisBackend

    app = create_celery(settings, producer_only=True)
    try:
        backends = {"celery": RedisBackend(app=app, url=settings.result_backend), "brokerstack": app.backend}
        times: dict[str, list[float | None]] = {name: [] for name in backends}
        for _ in range(repetitions):
            for name, backend in backends.items():
                ids = [f"task-cost-store-{name}-{n}" for n in range(stores)]
                t0 = time.perf_counter()
                for task_id in ids:
                    backend.mark_as_done(task_id, None)
                times[name].append(round((time.perf_counter() - t0) * 1e6 / stores, 2))
                backend.client.delete(*(backend.get_key_for_task(task_id) for task_id in ids))
    finally:
        app.close()
    return {"stores": stores, "us_per_store": {name: _spread(values) for name, values in times.items()}}


def _spread(values: list[float | None]) -> dict[str, float] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": round(statistics.median(present), 4), "min": min(present), "max": max(present)}


def summarize(runs: list[Repetition]) -> dict[str, Any]:
    """Median and range of every per-task figure over the repetitions of one configuration."""
    out: dict[str, Any] = {}
    for side in ("producer", "worker"):
        sides: list[Side] = [getattr(r, side) for r in runs]
        out[side] = {
            "cpu_ms": _spread([s.cpu_ms for s in sides]),
            "wall_ms": _spread([s.wall_ms for s in sides]),
            **{
                ops: {
                    name: _spread([getattr(s, ops).get(name, 0.0) for s in sides])
                    for name in sorted({name for s in sides for name in getattr(s, ops)})
                }
                for ops in ("broker_ops", "backend_ops")
            },
        }
    return out
