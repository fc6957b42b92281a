"""How much memory one queued task, one stored result and one dead letter take, on both brokers.

Everything goes through the product as it runs: tasks are published with ``apply_async`` on
brokerstack's own Celery app (so the broker stores exactly what production sends), results are
written by a real ``celery worker`` with brokerstack's defaults, and dead letters come from a task
that fails for good (``worker.tasks.tools.fail``), captured the way each broker does it (Redis: the
worker's hooks into the broker's Redis; RabbitMQ: native dead-lettering into its DLQ, plus a note
in the results Redis).

What is read:

* **Redis** (the Redis broker and the results Redis of both stacks): ``INFO memory`` ``used_memory``,
  what ``maxmemory`` is checked against, read once it has settled (equal on two reads in a row, no
  worker connected, so no client buffers come and go), and beside it the sum of ``MEMORY USAGE``
  of every key (``SAMPLES 0``: exact).
* **RabbitMQ**: the queue's ``memory`` (its process) and ``message_bytes`` (the bodies) from the
  management API, and the node's ``mem_used``, read once the statistics stop moving.

Each figure is measured at a few sizes, each from its own empty baseline, and the per-item figure
is the slope of a least-squares line through (items, bytes): fixed costs (a list's header, a key
created once) go into the intercept, not into the per-item bytes. A first round at the smallest
sizes is run and left out: it pays one-time costs (scripts loaded, tables grown) that would
otherwise inflate whichever size came first. The slopes of the repetitions
(sizes in alternating order) give a median with its range; a slope that comes out negative or
scattered is kept as it is and labelled, never clipped.

Used by ``brokerstack sizing`` (records in ``<results>/sizing/``) and tests/integration/test_sizing.py;
lab.report.sizing renders docs/sizing.md from the records.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from lab.experiments.bench import e2e
from lab.experiments.bench.runner import declare_topology
from lab.harness.nodes import BrokerNode
from lab.harness.processes import CeleryWorker
from lab.harness.results import client_versions, machine, write_record
from lab.harness.vendors import VENDORS
from lab.harness.vendors.redis.vendor import redis_memory
from worker.celery_app import create_celery
from worker.dead_letters import store_for
from worker.settings import Settings
from worker.topology import DEAD_LETTER_QUEUE, DEFAULT_QUEUE

SCHEMA = "brokerstack.sizing/1"
CATEGORY = "sizing"
#: Queued tasks (and so stored results) per measurement: large enough that a few KB of allocator
#: noise is under 1 % of the growth, small enough that a repetition takes well under a minute.
TASK_SIZES = (500, 1000, 2000)
#: Dead letters per measurement (a failing task costs the worker a traceback each: slower).
DEAD_LETTER_SIZES = (100, 200, 400)
REPETITIONS = 3
FAIL = "worker.tasks.tools.fail"
#: The longest a worker may take to run one measurement's tasks on a slow machine.
DRAIN_TIMEOUT = 600.0
#: Between two looks at a draining queue.
POLL = 0.1
#: A figure whose range is wider than this share of its median, or whose lines fit worse than
#: MIN_R2, is labelled noisy rather than quoted as a size.
NOISY_SPREAD = 0.5
MIN_R2 = 0.9
#: What a broker node needs for its memory to be readable soon after a change (its vendor says).
NODE_OPTIONS: dict[str, dict[str, Any]] = {name: v.memory_node_options for name, v in VENDORS.items()}

Tick = Callable[[str], None]


# --- reading memory ---------------------------------------------------------------------------


class Meters:
    """The memory readings one measurement compares: the broker's and the results Redis'."""

    def __init__(self, broker: BrokerNode, results_url: str) -> None:
        self.broker = broker
        self.results_url = results_url

    def broker_memory(self, queue: str, messages: int) -> dict[str, float]:
        """``messages``: what ``queue`` holds now (RabbitMQ's statistics are read until they say so)."""
        return self.broker.vendor.memory(self.broker, queue, messages)

    def results_memory(self) -> dict[str, float]:
        return redis_memory(self.results_url)  # the result backend is Redis on every broker


def _delta(before: dict[str, float], after: dict[str, float], prefix: str = "") -> dict[str, float]:
    return {prefix + name: after[name] - before[name] for name in after if name not in ("settled", "messages")} | {
        prefix + "settled": min(before.get("settled", 1.0), after.get("settled", 1.0))
    }


# --- the record ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """The growth measured at one size in one repetition (metric name -> bytes)."""

    item: str  # "queued_task" | "result" | "dead_letter" | "failed_task_in_redis"
    repetition: int
    items: int
    bytes: dict[str, float]


@dataclass
class Fit:
    slope: float
    intercept: float
    r2: float


@dataclass
class Figure:
    """Bytes per item of one metric: the median of the repetitions' slopes with their range."""

    item: str
    metric: str
    median: float
    min: float
    max: float
    slopes: list[float]
    r2_min: float
    verdict: str  # "ok" | "noisy" | "negative" | "unsettled"


@dataclass
class SizingRecord:
    schema: str
    broker: str
    broker_version: str
    driver: str
    queue: str
    queue_type: str | None
    task_sizes: list[int]
    dead_letter_sizes: list[int]
    repetitions: int
    result_expires_s: int
    message_bytes: int
    figures: list[Figure]
    samples: list[Sample]
    clients: dict[str, str] = field(default_factory=client_versions)
    machine: dict[str, Any] = field(default_factory=machine)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SizingRecord:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["figures"] = [Figure(**f) for f in data.get("figures", [])]
        values["samples"] = [Sample(**s) for s in data.get("samples", [])]
        return cls(**values)

    def figure(self, item: str, metric: str) -> Figure | None:
        return next((f for f in self.figures if f.item == item and f.metric == metric), None)


def fit_line(points: Sequence[tuple[float, float]]) -> Fit:
    """Least squares through (items, bytes): the slope is bytes per item."""
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    if len(set(xs)) < 2:
        raise ValueError("a slope needs at least two different sizes")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 - ss_res / ss_tot if ss_tot else (1.0 if ss_res == 0 else 0.0)
    return Fit(slope=slope, intercept=intercept, r2=r2)


def verdict(slopes: Sequence[float], r2s: Sequence[float], settled: bool = True) -> str:
    """``negative`` (the median), ``noisy`` (a slope at or below zero, a range wider than
    NOISY_SPREAD of the median, or a line fitting worse than MIN_R2), ``unsettled`` (memory never
    stopped moving before a reading), else ``ok``."""
    median = statistics.median(slopes)
    if median <= 0:
        return "negative"
    if min(slopes) <= 0 or (max(slopes) - min(slopes)) > NOISY_SPREAD * median or min(r2s) < MIN_R2:
        return "noisy"
    return "ok" if settled else "unsettled"


def figures_from(samples: Sequence[Sample]) -> list[Figure]:
    """One figure per (item, metric): a slope per repetition, then their median and range."""
    out = []
    for item in dict.fromkeys(s.item for s in samples):
        of_item = [s for s in samples if s.item == item]
        metrics = [m for m in of_item[0].bytes if not m.endswith("settled")]
        settled = all(v for s in of_item for m, v in s.bytes.items() if m.endswith("settled"))
        for metric in metrics:
            fits = [
                fit_line([(s.items, s.bytes[metric]) for s in of_item if s.repetition == rep])
                for rep in sorted({s.repetition for s in of_item})
            ]
            slopes = [round(f.slope, 1) for f in fits]
            r2s = [f.r2 for f in fits]
            out.append(
                Figure(
                    item=item,
                    metric=metric,
                    median=round(statistics.median(slopes), 1),
                    min=min(slopes),
                    max=max(slopes),
                    slopes=slopes,
                    r2_min=round(min(r2s), 4),
                    verdict=verdict(slopes, r2s, settled),
                )
            )
    return out


# --- one measurement ---------------------------------------------------------------------------


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        client.flushdb()
    finally:
        client.close()


def _result_keys(url: str) -> int:
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        return sum(1 for _ in client.scan_iter(match="celery-task-meta-*", count=1000))
    finally:
        client.close()


class Measurement:
    """One broker, one results Redis: publishes, drains and reads memory."""

    def __init__(self, settings: Settings, broker: BrokerNode, log_dir: Path, tick: Tick) -> None:
        self.settings = settings
        self.broker = broker
        self.log_dir = log_dir
        self.tick = tick
        self.meters = Meters(broker, settings.result_backend)
        self.app = create_celery(settings, producer_only=True)
        declare_topology(self.app)
        self.depth = e2e.QueueDepth(broker.kind, broker.url)
        self.store = store_for(self.app)
        self.store.ensure_declared()

    def close(self) -> None:
        self.depth.close()
        self.app.close()

    def clean(self) -> None:
        """An empty work queue, DLQ and results Redis: every size starts from its own baseline."""
        self.depth.purge()
        self.store.purge()
        _flush(self.settings.result_backend)

    def _worker(self) -> CeleryWorker:
        worker = CeleryWorker(self.settings.to_env(), queues=[DEFAULT_QUEUE], pool="solo", log_dir=self.log_dir)
        worker.start()
        worker.wait_ready()
        return worker

    def tasks(self, count: int, repetition: int) -> list[Sample]:
        """``count`` no-ops queued (broker growth), then run by a worker (results Redis growth)."""
        self.clean()
        queued_before = self.meters.broker_memory(DEFAULT_QUEUE, 0)
        e2e.publish_backlog(self.app, count, tick=self.tick)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.depth() < count:  # RabbitMQ routes asynchronously to the publisher's return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.depth()} of {count} published tasks reached the queue")
            time.sleep(POLL)
        queued = _delta(queued_before, self.meters.broker_memory(DEFAULT_QUEUE, count))
        results_before = self.meters.results_memory()
        worker = self._worker()
        try:

            def done() -> bool:
                stored = _result_keys(self.settings.result_backend)
                self.tick(f"{self.broker.kind}: {stored}/{count} results stored")
                return self.depth() == 0 and stored >= count

            worker.wait_until(done, DRAIN_TIMEOUT, f"{count} results stored")
        finally:
            worker.close()  # warm shutdown: the task running now finishes; its connections close
        results = _delta(results_before, self.meters.results_memory())
        return [
            Sample("queued_task", repetition, count, queued),
            Sample("result", repetition, count, results),
        ]

    def dead_letters(self, count: int, repetition: int) -> list[Sample]:
        """``count`` tasks that fail for good: the dead letters' growth where the broker keeps them,
        and the failed tasks' growth of the results Redis (FAILURE results; RabbitMQ's notes)."""
        self.clean()
        broker_before = self.meters.broker_memory(DEAD_LETTER_QUEUE, 0)
        results_before = self.meters.results_memory()
        task = self.app.tasks[FAIL]
        for i in range(count):
            task.apply_async(args=["sizing: failed on purpose"])
            if i % 100 == 0:
                self.tick(f"{self.broker.kind}: publishing failures {i}/{count}")
        worker = self._worker()
        try:

            def done() -> bool:
                letters = self.store.depth()
                self.tick(f"{self.broker.kind}: {letters}/{count} dead letters")
                return letters >= count

            worker.wait_until(done, DRAIN_TIMEOUT, f"{count} dead letters")
        finally:
            worker.close()
        return [
            Sample(
                "dead_letter",
                repetition,
                count,
                _delta(broker_before, self.meters.broker_memory(DEAD_LETTER_QUEUE, count)),
            ),
            Sample("failed_task_in_redis", repetition, count, _delta(results_before, self.meters.results_memory())),
        ]


def measure_sizing(
    settings: Settings,
    broker: BrokerNode,
    *,
    task_sizes: Sequence[int] = TASK_SIZES,
    dead_letter_sizes: Sequence[int] = DEAD_LETTER_SIZES,
    repetitions: int = REPETITIONS,
    tick: Tick = lambda _: None,
    write: bool = True,
    warm_up: bool = True,
) -> SizingRecord:
    """Every size ``repetitions`` times, in ascending then descending order (so a drift of the
    machine does not line up with the size), after a warm-up round left out (``warm_up=False``
    skips it where only exact key sizes are looked at); returns (and writes) the record."""
    log_dir = Path(tempfile.mkdtemp(prefix="brokerstack-sizing-"))
    measurement = Measurement(settings, broker, log_dir, tick)
    samples: list[Sample] = []
    try:
        # A first round pays one-time costs (scripts loaded, tables and buffers grown, the allocator
        # warmed) that no later baseline gives back: measured and left out.
        if warm_up:
            tick(f"{broker.kind}: warm-up")
            measurement.tasks(min(task_sizes), -1)
            measurement.dead_letters(min(dead_letter_sizes), -1)
        for rep in range(repetitions):
            step = 1 if rep % 2 == 0 else -1
            for size in list(task_sizes)[::step]:
                tick(f"{broker.kind} repetition {rep + 1}/{repetitions}: {size} tasks")
                samples += measurement.tasks(size, rep)
            for size in list(dead_letter_sizes)[::step]:
                tick(f"{broker.kind} repetition {rep + 1}/{repetitions}: {size} dead letters")
                samples += measurement.dead_letters(size, rep)
        message = e2e.capture_message(measurement.app, broker.kind, broker.url)
        measurement.clean()
    finally:
        measurement.close()
    record = SizingRecord(
        schema=SCHEMA,
        broker=broker.kind,
        broker_version=broker.version(),
        driver=broker.driver,
        queue=DEFAULT_QUEUE,
        queue_type=broker.vendor.queue_type(settings),
        task_sizes=list(task_sizes),
        dead_letter_sizes=list(dead_letter_sizes),
        repetitions=repetitions,
        result_expires_s=settings.result_expires,
        message_bytes=message.size,
        figures=figures_from(samples),
        samples=samples,
    )
    if write:
        write_record(CATEGORY, f"{broker.kind}-{broker.driver}", record.as_dict())
    return record
