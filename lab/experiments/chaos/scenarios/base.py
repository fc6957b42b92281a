"""What every scenario shares: the Scenario interface and the helpers that start the stack, put
load on it, inject faults at seeded points, wait for recovery and describe what happened."""

from __future__ import annotations

import bisect
import itertools
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.load import CeleryLoad, Plan, noop_plan
from lab.experiments.chaos.runner import RunOptions, summarize

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup

#: How long a fault may wait for the producer to publish again after the previous one.
RECOVERY_WAIT = 90.0
#: The API must answer a refused publish within PUBLISH_TIMEOUT plus this (scheduling slack).
REFUSAL_SLACK = 1.0
SLEEP_TASK = "worker.tasks.tools.sleep"
#: publish-kill: how long a restarted broker may take to serve the queue again.
CONSUME_RETRY_S = 60.0
#: Bounds of the automatic publish rate (tasks per second).
AUTO_RATE_MIN = 10.0
AUTO_RATE_MAX = 200.0
NOOP_TASK = "worker.tasks.tools.noop"
#: rolling-deploy: how long its tasks run (seconds, drawn per task from the seed).
DEPLOY_TASK_SECONDS = (1.0, 3.0)
#: rolling-deploy: a warm shutdown longer than this is a hung worker; it is killed and noted.
WARM_SHUTDOWN_TIMEOUT = 60.0
#: idle-kill: the kill lands this long after the ledger shows the last task's success (seconds).
IDLE_KILL_AFTER = (0.05, 0.2)
#: idle-kill: how often the ledger is read while waiting for the last task's success, so the kill
#: can land 50 ms after it.
IDLE_POLL = 0.005
#: broker-restart-mid-task: how much longer than ``long_task_seconds`` its long tasks may run.
MID_TASK_SPREAD = 2.0
#: Soak: the publish rate when none is given, the task mix's long tasks (one in SOAK_LONG_EVERY,
#: SOAK_LONG_SECONDS each), and a load that only the clock ends.
SOAK_RATE = 50.0
SOAK_LONG_EVERY = 20
SOAK_LONG_SECONDS = 1.0
SOAK_UNBOUNDED = 10**9


class Scenario:
    name: ClassVar[str]
    description: ClassVar[str]
    #: Runs on a RabbitMQ cluster (setup.cluster_size nodes) instead of one node.
    cluster: ClassVar[bool] = False
    #: Defaults for the RunOptions fields left at None.
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 0.0}
    #: Has a soak mode (RunOptions.duration: faults at random intervals until the time is up).
    soak: ClassVar[bool] = False

    def resolve(self, options: RunOptions) -> RunOptions:
        filled = {key: value for key, value in self.defaults.items() if getattr(options, key) is None}
        return replace(options, **filled)

    def faults_planned(self, options: RunOptions) -> int:
        return options.kills

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        """Rough seconds one fault takes until the stack works again (sizes the automatic rate)."""
        return setup.vendor.recovery_seconds

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        """A publish rate at which the load spans all the faults: every fault lands mid-stream
        and the stream goes on while the stack recovers (between AUTO_RATE_MIN and _MAX)."""
        if options.kills <= 0:
            return AUTO_RATE_MAX
        duration = (options.kills + 0.5) * self.fault_period(setup, options)
        return max(AUTO_RATE_MIN, min(AUTO_RATE_MAX, options.tasks / duration))

    def longest_task(self, options: RunOptions) -> float:
        """Seconds the longest task of a run may take, when the scenario promises no duplicates:
        on Redis a task still unacked after the visibility timeout is handed out again by design,
        so the runner refuses a visibility timeout that short (0: no such bound)."""
        return 0.0

    def run(self, ctx: ChaosRun) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "cluster": self.cluster, "soak": self.soak}


# --- shared pieces ---------------------------------------------------------------------------------


def start_stack(ctx: ChaosRun, *, workers: bool = True) -> None:
    """Nodes, settings, execution log and workers; records the setup time and broker version."""
    started = time.time()
    ctx.stack.start_nodes()
    ctx.stack.make_settings(**ctx.settings_overrides())
    ctx.open_execution_log()
    if workers:
        o = ctx.options
        ctx.emit("starting", f"starting {o.workers} worker(s)", force=True)
        ctx.stack.start_workers(o.workers, pool=o.pool or "solo", concurrency=o.concurrency or 1)
    ctx.record.versions["broker"] = ctx.stack.running_broker_node().version()
    ctx.timings["setup_s"] = time.time() - started


def wait_for_point(ctx: ChaosRun, load: Any, point: int) -> bool:
    """Wait until the stream has made ``point`` attempts; False if the load ended before."""
    ctx.wait_until(
        lambda: ctx.ledger.attempted >= point or load.done, 24 * 3600, f"load to reach attempt {point}", phase="load"
    )
    return ctx.ledger.attempted >= point


def wait_recovered(ctx: ChaosRun, load: Any, since: float) -> None:
    """Before the next fault: wait until the producer published and a worker started a task after
    ``since`` (the last fault's recovery reference), so every fault hits a working stream. A
    stream held before the next fault point may go on meanwhile, a few attempts at a time."""

    def recovered() -> bool:
        if load.done:
            return True
        if ctx.ledger.first_ack_after(since) is not None and next(ctx.executions.starts_after(since), None):
            return True
        load.counter.set_limit(ctx.ledger.attempted + RECOVERY_ALLOWANCE)
        return False

    if not ctx.wait_until(recovered, RECOVERY_WAIT, "producer and workers to recover", phase="load"):
        ctx.note(
            f"producer or workers had not recovered {RECOVERY_WAIT:.0f} s after a fault; injecting the next one anyway"
        )


#: While waiting for recovery, the stream may run this many attempts past what it has made.
RECOVERY_ALLOWANCE = 10


def run_faults(ctx: ChaosRun, load: Any, points: list[int], inject: Any, *, wait_recovery: bool = True) -> None:
    """Inject one fault per point; ``inject(ctx, n)`` returns the fault's entry (or None).

    The load was created with ``limit=first_limit(points, total)``: it may run past the next
    point only once the previous fault is over (and, with ``wait_recovery``, once the producer
    and the workers work again), so every fault lands inside the load and hits a working stream.
    """
    total = ctx.options.tasks
    for n, point in enumerate(points, 1):
        if not wait_for_point(ctx, load, point):
            ctx.note(f"the load ended before fault {n}")
            break
        fault = inject(ctx, n)
        if fault is not None:
            ctx.record.faults.append(fault)
        ctx.faults_done = n
        if wait_recovery and fault is not None and fault.get("ref_at") is not None:
            wait_recovered(ctx, load, fault["ref_at"])
        load.counter.set_limit(points[n + 1] if n + 1 < len(points) else total)
    load.counter.release()
    ctx.timings["load_held_s"] = load.counter.held_s


def first_limit(points: list[int], total: int) -> int:
    return points[1] if len(points) > 1 else total


def run_faulted_load(
    ctx: ChaosRun, points: list[int], inject: Any, *, plan: Plan = noop_plan, wait_recovery: bool = True
) -> None:
    """The skeleton the fault-point scenarios share: the run's Celery load (``plan`` picks each
    task, no-ops by default), one fault per point, the load finished, the queues drained."""
    o = ctx.options
    load = CeleryLoad(
        ctx.settings,
        ctx.ledger,
        total=o.tasks,
        rate=ctx.rate,
        id_prefix=f"chaos-{ctx.run_id}",
        threads=o.producers,
        limit=first_limit(points, o.tasks),
        plan=plan,
    )
    ctx.register_load(load)
    load.start()
    run_faults(ctx, load, points, inject, wait_recovery=wait_recovery)
    finish_load(ctx, load)
    ctx.drain()


def kill_target_for(options: Any, n: int) -> str:
    """What the n-th worker kill hits: the configured target, or worker and pool child in turn."""
    return options.kill_target if options.kill_target != "both" else ("worker", "child")[(n - 1) % 2]


def finish_load(ctx: ChaosRun, load: Any) -> None:
    ctx.wait_until(lambda: load.done, 24 * 3600, "the load to finish", phase="load")
    errors = [load.error] if getattr(load, "error", None) else list(getattr(load, "errors", []))
    if errors:
        raise RuntimeError(f"the producer failed: {errors[0]!r}") from errors[0]
    ctx.timings["load_s"] = (load.finished_at or time.time()) - (load.started_at or time.time())
    acked = ctx.ledger.acknowledged
    ctx.timings["ack_rate_per_s"] = acked / ctx.timings["load_s"] if ctx.timings["load_s"] > 0 else None


def ensure_workers(ctx: ChaosRun) -> None:
    """Replace every worker that is not running (an interrupt may land between a kill and its
    replacement), so the drain has consumers."""
    for worker in [w for w in ctx.stack.workers if not w.is_running()]:
        ctx.stack.replace_worker(worker, wait=True)


def redelivery_after_the_fact(ctx: ChaosRun) -> None:
    """Per fault, from the ledger after the drain: how long until every task the fault interrupted
    started again (a soak does not wait for it before the next fault)."""
    delays: list[float | None] = []
    for fault in ctx.record.faults:
        ids = set(fault.get("interrupted_ids") or [])
        killed = fault["killed_at"] + ctx.t0_wall
        seen: dict[str, float] = {}
        for entry in ctx.executions.starts_after(killed):
            if entry.task_id in ids and entry.task_id not in seen:
                seen[entry.task_id] = entry.t - killed
        fault["redelivery_s"] = max(seen.values()) if ids and len(seen) == len(ids) else None
        fault["not_redelivered"] = len(ids) - len(seen)
        fault["interrupted_ids"] = sorted(ids)[:8]
        if ids:
            delays.append(fault["redelivery_s"])
    ctx.timings["redelivery_delay_s"] = summarize(delays)


def fault_entry(ctx: ChaosRun, n: int, action: str, node: str, killed_at: float) -> dict[str, Any]:
    return {
        "n": n,
        "action": action,
        "node": node,
        "at_s": killed_at - ctx.t0_wall,
        "at_attempt": ctx.ledger.attempted,
        "killed_at": killed_at,
    }


def broker_recovery_metrics(ctx: ChaosRun) -> None:
    """Per fault, from the ledger: when the producer published again and a worker started a task
    again (both from ``ref_at``: the broker ready, or for a cluster the kill), and the longest
    pause between two acknowledgements from the kill until the producer recovered."""
    acks = sorted(a.completed_at for a in ctx.ledger.attempts() if a.acknowledged and a.completed_at)
    producer, consumer, gaps = [], [], []
    for fault in ctx.record.faults:
        ref, killed = fault.pop("ref_at"), fault["killed_at"]
        first_ack = ctx.ledger.first_ack_after(ref)
        first_start = min((e.t for e in ctx.executions.starts_after(ref)), default=None)
        fault["producer_recovery_s"] = None if first_ack is None else first_ack - ref
        fault["consumer_recovery_s"] = None if first_start is None else first_start - ref
        fault["ack_gap_s"] = _longest_gap(acks, killed, first_ack)
        producer.append(fault["producer_recovery_s"])
        consumer.append(fault["consumer_recovery_s"])
        gaps.append(fault["ack_gap_s"])
        for key in ("killed_at", "dead_at", "ready_at"):
            if fault.get(key) is not None:
                fault[key] = fault[key] - ctx.t0_wall
    ctx.timings["recovery_s"] = summarize(producer)
    ctx.timings["consumer_recovery_s"] = summarize(consumer)
    ctx.timings["ack_gap_s"] = summarize(gaps)
    ctx.timings["restart_s"] = summarize([f.get("restart_s") for f in ctx.record.faults])


def _longest_gap(acks: list[float], start: float, end: float | None) -> float | None:
    """Longest time between consecutive acknowledgements around [start, end]."""
    if end is None:
        return None
    lo = max(0, bisect.bisect_left(acks, start) - 1)
    hi = bisect.bisect_right(acks, end)
    window = acks[lo:hi]
    if len(window) < 2:
        return None
    return max(b - a for a, b in itertools.pairwise(window))


def describe_errors(ctx: ChaosRun) -> None:
    errors = ctx.ledger.errors()
    if errors:
        ctx.record.details["publish_errors"] = dict(errors.most_common(8))


# --- broker faults under Celery load ------------------------------------------------------------------


def restart_node(node: Any, fault: dict[str, Any], killed_at: float) -> dict[str, Any]:
    """Start a stopped or killed broker node on the same data, wait until it serves, and note in
    ``fault`` how long the restart took and how long the broker was down in all."""
    start_call = time.time()
    node.start()
    node.wait_ready()
    ready_at = time.time()
    fault.update(ready_at=ready_at, restart_s=ready_at - start_call, down_s=ready_at - killed_at, ref_at=ready_at)
    return fault


class Closer:
    """Closes a connection at cleanup, quietly (its broker was killed under it)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def stop(self, timeout: float = 0) -> None:
        try:
            self.conn.release()
        except Exception:  # noqa: BLE001
            pass
