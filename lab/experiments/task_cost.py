"""Where one task's time goes: what the broker and the result backend are asked per task, and how
much of the worker's own time (CPU) it costs, for brokerstack's defaults and for fire-and-forget.

Counted on the servers, not guessed from the code: Redis' ``INFO commandstats`` (every command,
pipelined or not) on the broker and on the result backend, RabbitMQ's message counters (publish,
confirm, deliver, ack, ...) from its management API. The producer's share is counted while the
backlog is published (no worker running), the worker's while one solo worker drains it. Counts do
not depend on the machine's speed; times do, so every figure is a median of repetitions with its
range. Round trips to the result backend are counted apart, in one more drain per configuration
with a MONITOR on the backend (RoundTrips): watching costs the server time, so that drain's times
are left out.

Used by ``brokerstack task-cost`` (records in ``<results>/task-cost/``) and
tests/integration/test_task_cost.py; lab.report.task_cost renders docs/task-cost.md from them.
"""

from __future__ import annotations

import contextlib
import re
import statistics
import tempfile
import threading
import time
import uuid
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
#: Drains per configuration with the backend's round trips counted (a count, not a time: the
#: same in every pass but for idle polls spread over the backlog, so one is enough).
ROUND_TRIP_PASSES = 1


@dataclass
class Side:
    """What one side (producer or worker) cost per task in one repetition."""

    broker_ops: dict[str, float] = field(default_factory=dict)
    backend_ops: dict[str, float] = field(default_factory=dict)
    #: Round trips the clients made to the result backend (RoundTrips); None where not watched.
    backend_round_trips: float | None = None
    cpu_ms: float | None = None
    wall_ms: float | None = None


@dataclass
class Repetition:
    config: str
    producer: Side
    worker: Side
    #: A MONITOR counted the round trips: its times (and the commands it made the server count)
    #: are left out of the summary.
    watched: bool = False


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


class RoundTrips:
    """Round trips clients made to one Redis server, counted from a MONITOR on it.

    ``INFO commandstats`` (and ``total_commands_processed``) count the commands a script calls
    too: one EVALSHA of worker/store_result.lua shows as four commands but is one round trip.
    MONITOR marks those calls "lua"; they are left out, and so are the commands queued between a
    client's MULTI and EXEC (redis-py sends the block in one write: it counts once, at MULTI).
    A pipeline without MULTI would count once per command: the result backend is sent none for a
    task. ``ignore``: commands our own reads send (Counters.OWN), by name or ``name|subcommand``.
    """

    #: Longest wait for the MONITOR to show our marker (it follows everything executed before it).
    SYNC_TIMEOUT = 30.0
    MARKER = "brokerstack-round-trips-"

    def __init__(self, url: str, ignore: tuple[str, ...] = ()) -> None:
        self.ignore = set(ignore)
        self._count = 0
        self._in_multi: set[tuple[str, str]] = set()
        self._seen: set[str] = set()
        self._changed = threading.Condition()
        self._client = redis.Redis.from_url(url, socket_timeout=10)
        self._watcher = redis.Redis.from_url(url, socket_timeout=None)
        self._monitor = self._watcher.monitor()
        self._monitor.__enter__()  # returns once the server answered MONITOR: it watches from here
        self._thread = threading.Thread(target=self._watch, name="round-trips", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        stop = f"{self.MARKER}stop"
        while True:
            line = self._monitor.next_command()
            command = str(line.get("command", ""))
            with self._changed:
                if command.startswith(f"ECHO {self.MARKER}"):
                    self._seen.add(command.removeprefix("ECHO "))
                    self._changed.notify_all()
                else:
                    self._observe(line, command)
            if command == f"ECHO {stop}":
                return

    def _observe(self, line: dict[str, Any], command: str) -> None:
        if line.get("client_type") == "lua":
            return
        words = command.split(" ", 2)
        name = words[0].lower()
        if name in self.ignore or (len(words) > 1 and f"{name}|{words[1].lower()}" in self.ignore):
            return
        client = (str(line.get("client_address")), str(line.get("client_port")))
        if client in self._in_multi:
            if name in ("exec", "discard"):
                self._in_multi.discard(client)
            return
        if name == "multi":
            self._in_multi.add(client)
        self._count += 1

    def _sync(self, marker: str) -> None:
        self._client.echo(marker)
        with self._changed:
            if not self._changed.wait_for(lambda: marker in self._seen, self.SYNC_TIMEOUT):
                raise TimeoutError(f"MONITOR did not show {marker} within {self.SYNC_TIMEOUT:.0f} s")

    def count(self) -> int:
        """Round trips seen so far, including every command the server executed before this call."""
        self._sync(f"{self.MARKER}{uuid.uuid4().hex}")
        with self._changed:
            return self._count

    def close(self) -> None:
        try:
            self._sync(f"{self.MARKER}stop")
            self._thread.join(self.SYNC_TIMEOUT)
        finally:
            self._monitor.__exit__(None, None, None)
            self._watcher.close()
            self._client.close()

    def __enter__(self) -> RoundTrips:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What a broker node needs for its counters to be readable (its vendor says).
NODE_OPTIONS: dict[str, dict[str, Any]] = {name: v.counters_node_options for name, v in VENDORS.items()}


# --- one measurement ----------------------------------------------------------------------------------


class Counters:
    """Reads the broker's and the backend's counters; the reads themselves are left out."""

    #: What our own reads add: INFO for commandstats, PING for the round-trip probe, ECHO for
    #: RoundTrips' markers.
    OWN = ("info", "ping", "echo", "flushdb", "client|setinfo", "client|setname", "hello")

    def __init__(self, broker: BrokerNode, backend_url: str, round_trips: RoundTrips | None = None) -> None:
        self.broker = broker
        self.backend_url = backend_url
        self.round_trips = round_trips

    def read(self, **at_least: int) -> tuple[dict[str, int], dict[str, int], int | None]:
        """The broker's and the backend's counters, and the backend's round trips when watched;
        ``at_least``: broker counters that must have reached these values (where the broker
        reports with a delay)."""
        # The result backend is Redis on every broker: its commands are counted the same way.
        broker, backend = self.broker.vendor.counters(self.broker, at_least), redis_commands(self.backend_url)
        return broker, backend, self.round_trips.count() if self.round_trips else None

    def side(self, before: Any, after: Any, tasks: int) -> Side:
        trips = None if before[2] is None or after[2] is None else round((after[2] - before[2]) / tasks, 3)
        return Side(
            broker_ops=_per_task(before[0], after[0], tasks, self.OWN),
            backend_ops=_per_task(before[1], after[1], tasks, self.OWN),
            backend_round_trips=trips,
        )


def measure_once(
    settings: Settings,
    broker: BrokerNode,
    config: str,
    tasks: int,
    log_dir: Path,
    tick: Callable[[str], None],
    watch: bool = False,
) -> Repetition:
    """Publish ``tasks`` no-ops with no worker running, then drain them with one solo worker;
    ``watch``: count the backend's round trips too (RoundTrips: this run's times are not kept).

    The drain's end is read from the worker's log (one ``succeeded`` line per task, written after
    its result is stored), so that nothing but the product talks to the servers while counting."""
    fire_and_forget = config == "fire_and_forget"
    with contextlib.ExitStack() as stack:
        app = create_celery(settings, producer_only=True)
        stack.callback(app.close)
        round_trips = stack.enter_context(RoundTrips(settings.result_backend, Counters.OWN)) if watch else None
        counters = Counters(broker, settings.result_backend, round_trips)
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
    _flush(settings.result_backend)
    return Repetition(config=config, producer=producer, worker=worker_side, watched=watch)


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
    ...) so a drift of the machine hits both alike, then once more each with the backend's round
    trips counted (ROUND_TRIP_PASSES); returns (and writes) the record."""
    log_dir = Path(tempfile.mkdtemp(prefix="brokerstack-task-cost-"))
    runs: list[Repetition] = []
    for n in range(repetitions):
        for config, overrides in CONFIGS.items():
            tick(f"{broker.kind} {config}: repetition {n + 1}/{repetitions}")
            runs.append(measure_once(settings_for_config(overrides), broker, config, tasks, log_dir, tick))
            tick(f"{broker.kind} {config}: repetition {n + 1}/{repetitions} done, {_worker_line(runs[-1])}")
    for n in range(ROUND_TRIP_PASSES):
        for config, overrides in CONFIGS.items():
            tick(f"{broker.kind} {config}: round trips counted {n + 1}/{ROUND_TRIP_PASSES}")
            settings = settings_for_config(overrides)
            runs.append(measure_once(settings, broker, config, tasks, log_dir, tick, watch=True))
            tick(f"{broker.kind} {config}: round trips counted, {_worker_line(runs[-1])}")
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
        "round_trip_passes": ROUND_TRIP_PASSES,
        "configs": {config: summarize([r for r in runs if r.config == config]) for config in CONFIGS},
        "result_store": result_store_comparison(settings, repetitions=repetitions),
        "runs": [asdict(r) for r in runs],
        "clients": client_versions(),
        "machine": machine(),
    }
    if write:
        record["path"] = str(write_record(CATEGORY, f"{broker.kind}-{broker.driver}", record))
    return record


def _worker_line(run: Repetition) -> str:
    """One repetition's worker side, for the progress lines."""
    side = run.worker
    if run.watched:
        return f"worker: {side.backend_round_trips} backend round trips per task"
    wall = f"{side.wall_ms:.3f}" if side.wall_ms is not None else "?"
    cpu = f"{side.cpu_ms:.3f}" if side.cpu_ms is not None else "?"
    return f"worker: {wall} ms wall, {cpu} ms CPU per task"


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
    """Median and range of every per-task figure over the repetitions of one configuration: times
    and commands from the unwatched ones, round trips from the watched ones."""
    out: dict[str, Any] = {}
    for side in ("producer", "worker"):
        sides: list[Side] = [getattr(r, side) for r in runs if not r.watched]
        watched: list[Side] = [getattr(r, side) for r in runs if r.watched]
        out[side] = {
            "backend_round_trips": _spread([s.backend_round_trips for s in watched]),
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
