"""Who holds a delayed task while it waits, and what it costs in memory (issue 14): one worker and
the broker, before and after N tasks with a long countdown were published.

Configurations: RabbitMQ (the delayed-delivery ladder: the broker holds them), Redis on brokerstack's
transport (a delayed sorted set per queue: the broker holds them) and Redis on kombu's stock
transport (``REDIS_TRANSPORT=kombu``: each task is handed to a worker at once, which keeps it unacked
in memory until due: the "before" of the issue). Each repetition starts fresh nodes (a Redis for
results apart from the broker) and one solo worker, reads the worker's memory (RSS of its process
tree) and the broker's (Redis ``used_memory``, RabbitMQ's node ``mem_used``) with nothing waiting,
publishes the tasks through the product (``apply_async`` with a countdown), waits until every task
is either in the broker's delayed store or held by the worker, and the worker's memory has settled,
then reads both again. Figures are medians of the repetitions with their range.

Used by ``brokerstack delayed-memory`` (records in ``<results>/delayed-memory/``).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.harness.interrupts import sigterm_raises
from lab.harness.nodes import BrokerKind, make_node, proctree
from lab.harness.nodes.base import random_suffix
from lab.harness.nodes.factory import DriverChoice
from lab.harness.processes import CeleryWorker
from lab.harness.results import client_versions, machine, write_record
from lab.harness.settings import settings_for
from lab.harness.vendors import VENDORS
from worker.brokers import profile_for
from worker.celery_app import create_celery
from worker.inspection import queue_depths
from worker.settings import Settings
from worker.topology import DEFAULT_QUEUE

SCHEMA = "brokerstack.delayed-memory/1"
CATEGORY = "delayed-memory"
#: Waiting tasks per repetition, as issue 14 asks.
TASKS = 100_000
REPETITIONS = 3
#: Long enough that nothing comes due during a repetition.
COUNTDOWN = 3600
#: (broker, Redis transport) of each configuration; RabbitMQ has no transport to choose.
CONFIGS: tuple[tuple[BrokerKind, str | None], ...] = (
    ("redis", "brokerstack"),
    ("redis", "kombu"),
    ("rabbitmq", None),
)
#: Threads publishing the tasks, each on its own producer connection.
PUBLISHERS = 4
NOOP_TASK = "worker.tasks.tools.noop"
#: The longest publishing, and then the handing over of every task to its holder, may take.
PUBLISH_TIMEOUT = 1800.0
SETTLE_TIMEOUT = 1800.0
#: Memory readings a second apart must agree within this fraction (or MEMORY_TOLERANCE_BYTES,
#: whichever is more: an Erlang VM's total moves by that much at rest), this many times in a row.
MEMORY_TOLERANCE = 0.005
MEMORY_TOLERANCE_BYTES = 2**20
MEMORY_STEADY_READS = 3
MEMORY_READ_INTERVAL = 1.0
MEMORY_SETTLE_TIMEOUT = 120.0

Tick = Callable[[str], Any]
#: Publishing reports its progress this many times (every 10 %): 100,000 tasks take many minutes.
PUBLISH_PROGRESS_STEPS = 10


def _quiet(_: str) -> None:
    return None


# --- readings ---------------------------------------------------------------------------------------


#: The broker's own total in a vendor's memory figures (lab.harness.vendors): Redis' ``used_memory``,
#: RabbitMQ's node ``mem_used``.
BROKER_TOTALS = ("used_memory", "node_mem_used")


def broker_memory(node: Any) -> int:
    """Bytes the broker uses, read by its vendor once settled (no task is ready in a work queue)."""
    figures = node.vendor.memory(node, DEFAULT_QUEUE, 0)
    return int(next(figures[key] for key in BROKER_TOTALS if key in figures))


def ready_in_queues(app: Any) -> int:
    return sum(queue_depths(app).values())


def settled(read: Callable[[], int], tick: Tick, what: str) -> tuple[int, bool]:
    """``read()`` once MEMORY_STEADY_READS readings in a row agree within the tolerance (the last
    one), and whether they did before MEMORY_SETTLE_TIMEOUT (else the last reading)."""
    deadline = time.monotonic() + MEMORY_SETTLE_TIMEOUT
    last, steady = read(), 0
    while time.monotonic() < deadline:
        time.sleep(MEMORY_READ_INTERVAL)  # memory settles with time: there is no event to wait on
        now = read()
        steady = steady + 1 if abs(now - last) <= max(MEMORY_TOLERANCE * last, MEMORY_TOLERANCE_BYTES) else 0
        last = now
        tick(f"{what}: {now / 2**20:.1f} MiB")
        if steady >= MEMORY_STEADY_READS:
            return now, True
    return last, False


def reading(node: Any, worker: CeleryWorker, tick: Tick) -> dict[str, Any]:
    assert worker.pid is not None
    pid = worker.pid
    worker_rss, worker_settled = settled(lambda: int(proctree.tree_usage(pid)["rss_bytes"]), tick, "worker")
    broker, broker_settled = settled(lambda: broker_memory(node), tick, "broker")
    return {
        "worker_rss_bytes": worker_rss,
        "broker_memory_bytes": broker,
        "settled": worker_settled and broker_settled,
    }


# --- one repetition ----------------------------------------------------------------------------------


def publish(settings: Settings, tasks: int, countdown: float, threads: int = PUBLISHERS, tick: Tick = _quiet) -> float:
    """Publish ``tasks`` no-ops with ``countdown`` through the product; seconds it took. ``tick``
    hears of every PUBLISH_PROGRESS_STEPS-th part published."""
    app = create_celery(settings, main="delayed-memory-producer", producer_only=True)
    counter = iter(range(tasks))
    lock = threading.Lock()
    errors: list[BaseException] = []
    step = max(1, -(-tasks // PUBLISH_PROGRESS_STEPS))
    published = 0
    started = time.monotonic()

    def done_one() -> None:
        nonlocal published
        with lock:  # ticked under the lock too, so the lines come in order
            published += 1
            if published % step == 0 or published == tasks:
                elapsed = time.monotonic() - started
                tick(f"published {published:,} of {tasks:,} ({100 * published // tasks} %) in {elapsed:.0f} s")

    def run() -> None:
        try:
            with app.producer_or_acquire() as producer:
                while True:
                    with lock:
                        index = next(counter, None)
                    if index is None:
                        return
                    app.tasks[NOOP_TASK].apply_async([], countdown=countdown, producer=producer)
                    done_one()
        except BaseException as exc:  # noqa: BLE001 - raised below
            errors.append(exc)

    try:
        pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(PUBLISH_TIMEOUT)
        if errors:
            raise RuntimeError(f"publishing failed: {errors[0]!r}") from errors[0]
        if any(thread.is_alive() for thread in pool):
            raise TimeoutError(f"publishing {tasks} tasks took more than {PUBLISH_TIMEOUT:g} s")
        return time.monotonic() - started
    finally:
        app.close()


def measure_once(
    kind: BrokerKind,
    transport: str | None,
    *,
    driver: DriverChoice | None,
    tasks: int,
    countdown: float,
    tick: Tick = _quiet,
) -> dict[str, Any]:
    """One repetition on fresh nodes: the worker's and the broker's memory before and after."""
    # A Redis transport given: kombu's redelivers a task still unacked after the visibility
    # timeout, so keep it beyond the countdown, as a deployment using long countdowns on it must.
    overrides: dict[str, Any] = (
        {"redis_transport": transport, "redis_visibility_timeout": int(countdown * 2)} if transport else {}
    )
    with (
        tempfile.TemporaryDirectory(prefix="delayed-memory-") as workdir,
        make_node("redis", driver, name=f"delayed-memory-results-{random_suffix()}") as results,
        make_node(kind, driver, **VENDORS[kind].memory_node_options) as broker,
    ):
        settings = settings_for(broker, results, **overrides)
        app = create_celery(settings, main="delayed-memory", producer_only=True)
        profile = profile_for(settings)
        worker = CeleryWorker(settings.to_env(), log_dir=Path(workdir), pool="solo", concurrency=1)
        try:
            worker.start()
            worker.wait_ready(timeout=120)
            tick("before")
            before = reading(broker, worker, tick)
            tick(f"publishing {tasks}")
            publish_s = publish(settings, tasks, countdown, tick=tick)

            def accounted() -> tuple[int, int, int]:
                """(waiting in the broker's delayed store, ready in a work queue, held by the
                worker): a task in neither of the first two was delivered to the worker."""
                waiting, ready = profile.delayed_depth(app), ready_in_queues(app)
                return waiting, ready, tasks - waiting - ready

            deadline = time.monotonic() + SETTLE_TIMEOUT
            waiting, ready, held = accounted()
            while ready:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ready} of {tasks} tasks still ready after {SETTLE_TIMEOUT:g} s")
                tick(f"settling: in the broker {waiting}, ready {ready}, held by the worker {held}")
                time.sleep(1.0)  # polled: the worker takes (kombu) or the broker files (ours) the tasks
                waiting, ready, held = accounted()
            after = reading(broker, worker, tick)
            waiting, _, held = accounted()
        finally:
            worker.close()
            app.close()
        return {
            "broker": kind,
            "transport": transport,
            "broker_version": broker.version(),
            "publish_s": round(publish_s, 2),
            "before": before,
            "after": after,
            "waiting_in_broker": waiting,
            "held_by_worker": held,
        }


class MeasurementInterrupted(KeyboardInterrupt):
    """SIGTERM during a measurement (raised like Ctrl-C so every cleanup path runs)."""


def _prefixed(tick: Tick, label: str) -> Tick:
    return lambda text: tick(f"{label}: {text}")


# --- the record ----------------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict[str, Any]], tasks: int) -> dict[str, Any]:
    """Medians with ranges over the repetitions of one configuration, and the growth per task."""
    out: dict[str, Any] = {"repetitions": len(runs)}
    for side in ("worker_rss_bytes", "broker_memory_bytes"):
        before = [r["before"][side] for r in runs]
        after = [r["after"][side] for r in runs]
        growth = [b - a for a, b in zip(before, after, strict=True)]
        out[side] = {
            "before": _summary(before),
            "after": _summary(after),
            "growth": _summary(growth),
            "per_task": _summary([g / tasks for g in growth]),
        }
    out["held_by_worker"] = _summary([r["held_by_worker"] for r in runs])
    out["waiting_in_broker"] = _summary([r["waiting_in_broker"] for r in runs])
    return out


def measure_delayed_memory(
    *,
    driver: DriverChoice | None = None,
    tasks: int = TASKS,
    repetitions: int = REPETITIONS,
    countdown: float = COUNTDOWN,
    configs: tuple[tuple[BrokerKind, str | None], ...] = CONFIGS,
    tick: Tick = _quiet,
    write: bool = True,
) -> dict[str, Any]:
    """Every configuration ``repetitions`` times (configurations alternated), and the record
    (written under ``<results>/delayed-memory/`` unless ``write`` is False)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    # SIGTERM cleans up as Ctrl-C does: every node and worker of the repetition is stopped.
    with sigterm_raises(MeasurementInterrupted):
        for repetition in range(repetitions):
            for kind, transport in configs:
                label = f"{kind}-{transport}" if transport else kind
                tick(f"{label} {repetition + 1}/{repetitions}")
                run = measure_once(
                    kind, transport, driver=driver, tasks=tasks, countdown=countdown, tick=_prefixed(tick, label)
                )
                runs.setdefault(label, []).append(run)
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "tasks": tasks,
        "countdown_s": countdown,
        "repetitions": repetitions,
        "driver": driver,
        "clients": client_versions(),
        "machine": machine(),
        "configs": {label: summarize(found, tasks) for label, found in runs.items()},
        "runs": runs,
    }
    if write:
        record["path"] = str(write_record(CATEGORY, f"delayed-memory-{tasks}", record))
    return record


__all__ = ["CONFIGS", "COUNTDOWN", "REPETITIONS", "TASKS", "measure_delayed_memory", "measure_once", "summarize"]
