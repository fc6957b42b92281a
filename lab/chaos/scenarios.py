"""The scenarios: what is started, what load is put on it, which fault is injected and when.

All share the runner's skeleton (lab.chaos.runner.ChaosRun): start the stack, put load on it,
inject ``kills`` faults at seeded points of the stream, drain, count. Times in fault entries are
seconds since the run started; the per-fault recovery numbers are filled in after the drain,
from the ledger.

* ``broker-kill``     kill -9 the broker K times under load, restart it on the same data.
* ``broker-restart``  the same with a graceful stop.
* ``worker-kill``     kill -9 a worker (or one pool process) while it runs long tasks; measures
                      how long until those tasks run again (redelivery delay).
* ``producer-outage`` the API under load while the broker is down for a while: a 202 must mean
                      stored; measures how fast the API accepts tasks again.
* ``publish-kill``    a plain kombu publisher sends a burst of persistent messages; the broker is
                      killed ~0.2 s after the last publish returned; what survives is counted.
* ``node-loss``       a 3-node RabbitMQ cluster with quorum queues; one node (the queue leader's)
                      is killed under load and restarted.

Routine operations, where a consumer is idle or shuts down on purpose rather than crashing under
steady load (where deferred work such as an ack always gets out):

* ``rolling-deploy``  tasks of 1-3 s under load; each worker in turn gets SIGTERM (warm shutdown:
                      it finishes what it runs and exits by itself) and a replacement; K rounds.
* ``broker-restart-mid-task``  a graceful broker restart while tasks longer than the restart run.
* ``idle-kill``       one task at a time; kill -9 of the prefork worker 50-200 ms after its last task
                      succeeded, the queue empty.

``worker-kill`` also has a soak mode (``RunOptions.duration``): hard worker kills at seeded random
intervals under steady load until the time is up; Ctrl-C ends it early and still drains and counts.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import random
import signal
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from lab.chaos.load import ApiLoad, CeleryLoad, Plan, SinglePublisher, noop_plan
from lab.chaos.runner import RunOptions, summarize
from lab.nodes import proctree

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.chaos.runner import ChaosRun
    from lab.chaos.setups import Setup
    from lab.processes import CeleryWorker

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
        return 4.0 if setup.broker == "redis" else 12.0

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


class BrokerFaultScenario(Scenario):
    """Steady Celery load; at each fault point the broker is hit and brought back on its data."""

    action: ClassVar[str] = "kill"

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        points = ctx.fault_points()
        run_faulted_load(ctx, points, self.inject)
        broker_recovery_metrics(ctx)
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        ctx.emit("fault", f"{self.action} {n}/{ctx.faults_total}: {node.kind}", force=True)
        killed_at = time.time()
        if self.action == "kill":
            node.kill()
        else:
            node.stop()
        fault = fault_entry(ctx, n, self.action, node.name, killed_at)
        fault["dead_at"] = time.time()
        fault["stop_s"] = fault["dead_at"] - killed_at
        if ctx.options.down_seconds:
            ctx.pause(ctx.options.down_seconds, "broker down")
        ctx.emit("fault", f"{self.action} {n}/{ctx.faults_total}: restarting", force=True)
        return restart_node(node, fault, killed_at)


def restart_node(node: Any, fault: dict[str, Any], killed_at: float) -> dict[str, Any]:
    """Start a stopped or killed broker node on the same data, wait until it serves, and note in
    ``fault`` how long the restart took and how long the broker was down in all."""
    start_call = time.time()
    node.start()
    node.wait_ready()
    ready_at = time.time()
    fault.update(ready_at=ready_at, restart_s=ready_at - start_call, down_s=ready_at - killed_at, ref_at=ready_at)
    return fault


class BrokerKill(BrokerFaultScenario):
    name = "broker-kill"
    description = "kill -9 the broker K times under steady load; restart it on the same data"
    action = "kill"


class BrokerRestart(BrokerFaultScenario):
    name = "broker-restart"
    description = "graceful stop/start of the broker K times under steady load"
    action = "stop"


class NodeLoss(BrokerFaultScenario):
    name = "node-loss"
    description = "3-node RabbitMQ cluster, quorum queues: kill -9 the queue leader's node under load, restart it"
    cluster = True
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 3.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return (options.down_seconds or 0.0) + 10.0

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        cluster = ctx.stack.cluster
        assert cluster is not None
        victim, leader = None, None
        try:
            leader = ctx.stack.queue_leader("default")
            victim = next((node for node in cluster.nodes if node.node_name == leader), None)
        except Exception as exc:  # noqa: BLE001 - fall back to taking turns
            ctx.note(f"could not find the queue leader: {exc!r}")
        if victim is None:
            victim = cluster.nodes[(n - 1) % len(cluster.nodes)]
        ctx.emit("fault", f"kill {n}/{ctx.faults_total}: node {victim.name}", force=True)
        killed_at = time.time()
        victim.kill()
        fault = fault_entry(ctx, n, "kill", victim.name, killed_at)
        fault["dead_at"] = time.time()
        fault["was_leader"] = leader == victim.node_name
        if ctx.options.down_seconds:
            ctx.pause(ctx.options.down_seconds, "node down")
        start_call = time.time()
        victim.start()
        victim.wait_ready()
        cluster.wait_formed()
        ready_at = time.time()
        # The cluster kept serving: recovery counts from the node's death, not from its return.
        fault.update(
            ready_at=ready_at, restart_s=ready_at - start_call, down_s=ready_at - killed_at, ref_at=fault["dead_at"]
        )
        return fault


# --- worker kills -------------------------------------------------------------------------------------------


class WorkerKill(Scenario):
    name = "worker-kill"
    description = "kill -9 a worker (or one of its pool processes) while it runs long tasks; measure redelivery"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}
    soak = True

    def faults_planned(self, options: RunOptions) -> int:
        if options.duration is not None:
            return max(1, round(options.duration / options.fault_interval))  # an estimate: gaps are random
        return options.kills

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        if options.duration is not None:
            return SOAK_RATE
        return super().auto_rate(setup, options)

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        redelivery = options.visibility_timeout + options.restore_interval * options.restore_throttle
        return options.long_task_seconds + 4.0 + (redelivery if setup.broker == "redis" else 1.0)

    def run(self, ctx: ChaosRun) -> None:
        if ctx.options.duration is not None:
            self.run_soak(ctx)
            return
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points()
        # Just before each fault point the stream carries long tasks, enough to keep every pool
        # process of every worker busy, so the victim is surely running one when it is killed.
        burst = max(2, o.workers * (o.concurrency or 1))
        long_indices = {i for p in points for i in range(max(0, p - burst), p)}

        def plan(index: int) -> tuple[str, list, str]:
            if index in long_indices:
                return SLEEP_TASK, [o.long_task_seconds], "long"
            return noop_plan(index)

        def inject(ctx: ChaosRun, n: int) -> dict[str, Any] | None:
            return self.kill_one(ctx, n, kill_target_for(o, n))

        run_faulted_load(ctx, points, inject, plan=plan, wait_recovery=False)
        delays = [f.get("redelivery_s") for f in ctx.record.faults]
        ctx.timings["redelivery_delay_s"] = summarize(delays)
        ctx.timings["first_redelivery_s"] = summarize([f.get("first_redelivery_s") for f in ctx.record.faults])
        for target in ("worker", "child"):
            mine = [f.get("redelivery_s") for f in ctx.record.faults if f["target"] == target]
            if mine:
                ctx.timings[f"redelivery_delay_s_{target}"] = summarize(mine)
        if ctx.setup.broker == "redis":
            ctx.record.details["redelivery_bound_s"] = o.visibility_timeout + o.restore_interval * o.restore_throttle
        describe_errors(ctx)

    def kill_one(self, ctx: ChaosRun, n: int, target: str) -> dict[str, Any] | None:
        o = ctx.options
        victim_start = ctx.wait_until(
            lambda: self._running_long(ctx), 300, "a worker to run a long task", phase="fault"
        )
        if victim_start is None:
            ctx.note(f"kill {n}: no worker ran a long task within 300 s; skipped")
            return None
        # Land somewhere inside the task rather than at its first instruction.
        ctx.pause(ctx.rng.uniform(0.1, max(0.2, o.long_task_seconds * 0.3)), "letting the task run")
        victim_start = self._running_long(ctx) or victim_start
        worker = next(w for w in ctx.stack.workers if w.hostname == victim_start.worker)
        ctx.executions.poll()
        if target == "worker":
            interrupted = [e for e in ctx.executions.running.values() if e.worker == worker.hostname]
            ctx.emit("fault", f"kill {n}/{ctx.faults_total}: worker {worker.name}", force=True)
            killed_at = time.time()
            worker.kill()
            replacement: CeleryWorker | None = ctx.stack.replace_worker(worker, wait=False)
            victim = worker.hostname
        else:
            pid = victim_start.pid
            interrupted = [e for e in ctx.executions.running.values() if e.pid == pid]
            ctx.emit("fault", f"kill {n}/{ctx.faults_total}: pool process {pid} of {worker.name}", force=True)
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            proctree.wait_pids_gone([pid], timeout=10)
            replacement = None
            victim = f"{worker.hostname} pid {pid}"
        ids = {e.task_id for e in interrupted}
        fault = fault_entry(ctx, n, "kill", victim, killed_at)
        fault.update(target=target, interrupted=len(ids), interrupted_ids=sorted(ids)[:8])

        def restarted() -> dict[str, float] | None:
            seen = {}
            for entry in ctx.executions.starts_after(killed_at):
                if entry.task_id in ids and entry.task_id not in seen:
                    seen[entry.task_id] = entry.t
            return seen if len(seen) == len(ids) else None

        if ctx.setup.broker == "redis" and target == "worker":
            bound = o.visibility_timeout + o.restore_interval * o.restore_throttle + o.long_task_seconds + 60
        else:
            bound = o.long_task_seconds + 60
        seen = ctx.wait_until(restarted, bound, "the killed tasks to run again", phase="fault") or {}
        delays = sorted(t - killed_at for t in seen.values())
        fault["redelivery_s"] = delays[-1] if len(delays) == len(ids) and delays else None
        fault["first_redelivery_s"] = delays[0] if delays else None
        fault["not_redelivered_within_s"] = None if len(delays) == len(ids) else bound
        fault["killed_at"] = killed_at - ctx.t0_wall
        if replacement is not None:
            replacement.wait_ready(timeout=120)
        return fault

    # --- soak ----------------------------------------------------------------------------------------

    def run_soak(self, ctx: ChaosRun) -> None:
        """Hard kills at seeded random intervals under a steady mixed load (mostly no-ops, one task in
        SOAK_LONG_EVERY a SOAK_LONG_SECONDS sleep) until ``duration`` is up. Ctrl-C or SIGTERM ends the
        faults early; the load then stops, the stack drains and the record counts what happened."""
        start_stack(ctx)
        o = ctx.options
        assert o.duration is not None

        def plan(index: int) -> tuple[str, list, str]:
            if index % SOAK_LONG_EVERY == SOAK_LONG_EVERY - 1:
                return SLEEP_TASK, [SOAK_LONG_SECONDS], "long"
            return noop_plan(index)

        load = CeleryLoad(
            ctx.settings,
            ctx.ledger,
            total=SOAK_UNBOUNDED,
            rate=o.rate or SOAK_RATE,
            id_prefix=f"chaos-{ctx.run_id}",
            plan=plan,
            threads=o.producers,
        )
        ctx.register_load(load)
        load.start()
        started = time.time()
        end = started + o.duration
        last = started
        stopped_by = "time"
        try:
            while True:
                due = last + ctx.rng.uniform(0.5, 1.5) * o.fault_interval
                if due >= end:
                    ctx.pause(max(0.0, end - time.time()), "soaking until the time is up")
                    break
                ctx.pause(max(0.0, due - time.time()), "soaking")
                n = ctx.faults_done + 1
                self.soak_kill(ctx, n, kill_target_for(o, n))
                last = time.time()
                if load.done:
                    raise RuntimeError(f"the producer stopped: {load.error!r}")
        except KeyboardInterrupt:
            stopped_by = "interrupt"
            ctx.stopped_early = True
            ctx.note(
                f"soak stopped by Ctrl-C/SIGTERM after {time.time() - started:.0f} of {o.duration:.0f} s and "
                f"{ctx.faults_done} faults; drained and counted what had happened"
            )
        soak_s = time.time() - started
        ctx.emit("drain", "stopping the load", force=True)
        load.stop(timeout=30)
        ctx.timings["load_held_s"] = load.counter.held_s
        ensure_workers(ctx)
        finish_load(ctx, load)
        ctx.record.details["soak"] = {
            "planned_s": o.duration,
            "ran_s": round(soak_s, 1),
            "stopped_by": stopped_by,
            "fault_interval_s": o.fault_interval,
            "rate": o.rate or SOAK_RATE,
        }
        ctx.drain()
        redelivery_after_the_fact(ctx)
        describe_errors(ctx)

    def soak_kill(self, ctx: ChaosRun, n: int, target: str) -> dict[str, Any] | None:
        """One hard kill of a random live worker (or of one of its pool processes) wherever it is, and its
        replacement started and ready before the next one."""
        live = [w for w in ctx.stack.workers if w.is_running()]
        if not live:
            ensure_workers(ctx)
            return None
        worker = ctx.rng.choice(live)
        ctx.executions.poll()
        if target == "child":
            running = [
                e for e in ctx.executions.running.values() if e.worker == worker.hostname and proctree.pid_alive(e.pid)
            ]
            children = [pid for pid in proctree.process_tree(worker.pid or 0) if pid != worker.pid]
            pids = [e.pid for e in running] or children
            if not pids:
                target = "worker"
        ctx.emit("fault", f"kill {n}: {target} of {worker.name}", force=True)
        killed_at = time.time()
        if target == "worker":
            interrupted = [e for e in ctx.executions.running.values() if e.worker == worker.hostname]
            worker.kill()
            victim = worker.hostname
        else:
            pid = ctx.rng.choice(pids)
            interrupted = [e for e in ctx.executions.running.values() if e.pid == pid]
            os.kill(pid, signal.SIGKILL)
            proctree.wait_pids_gone([pid], timeout=10)
            victim = f"{worker.hostname} pid {pid}"
        fault = fault_entry(ctx, n, "kill", victim, killed_at)
        fault.update(
            target=target,
            interrupted=len({e.task_id for e in interrupted}),
            interrupted_ids=sorted({e.task_id for e in interrupted}),
            killed_at=killed_at - ctx.t0_wall,
        )
        # Counted before the replacement starts: a Ctrl-C while it does must not drop a kill that happened.
        ctx.record.faults.append(fault)
        ctx.faults_done = n
        if target == "worker":
            ctx.stack.replace_worker(worker, wait=True)
        return fault

    @staticmethod
    def _running_long(ctx: ChaosRun) -> Any:
        live = {w.hostname for w in ctx.stack.workers if w.is_running()}
        candidates = [
            e
            for e in ctx.executions.running.values()
            if e.name == SLEEP_TASK and e.worker in live and proctree.pid_alive(e.pid)
        ]
        return min(candidates, key=lambda e: e.t) if candidates else None


# --- the API while the broker is down ------------------------------------------------------------------


class ProducerOutage(Scenario):
    name = "producer-outage"
    description = "the API under load while the broker is down: a 202 must mean stored; API recovery time"
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 5.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return (options.down_seconds or 0.0) + super().fault_period(setup, options)

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        settings = ctx.settings
        api = ctx.stack.start_api()
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        points = ctx.fault_points()
        load = ApiLoad(
            api.url,
            ctx.ledger,
            total=o.tasks,
            rate=ctx.rate,
            clients=o.clients,
            request_timeout=o.publish_timeout + 10,
            api_key=api_key,
            limit=first_limit(points, o.tasks),
        )
        ctx.register_load(load)
        load.start()
        run_faults(ctx, load, points, self.inject)
        finish_load(ctx, load)
        ctx.drain()
        broker_recovery_metrics(ctx)
        stats = load.stats
        bound = o.publish_timeout + REFUSAL_SLACK
        latencies = stats.refusal_latencies
        ctx.record.details.update(
            statuses=dict(stats.statuses),
            refusals=stats.refusals,
            transport_errors=stats.transport_errors,
            refusal_bound_s=bound,
            max_refusal_latency_s=round(max(latencies), 3) if latencies else None,
            refusals_over_bound=sum(1 for latency in latencies if latency > bound),
        )
        if ctx.record.details["refusals_over_bound"]:
            ctx.note(f"{ctx.record.details['refusals_over_bound']} refusal(s) took longer than {bound:g} s")
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        ctx.emit("fault", f"outage {n}/{ctx.faults_total}: broker killed", force=True)
        killed_at = time.time()
        node.kill()
        fault = fault_entry(ctx, n, "kill", node.name, killed_at)
        fault["dead_at"] = time.time()
        ctx.pause(ctx.options.down_seconds or 0.0, "broker down")
        return restart_node(node, fault, killed_at)


# --- a plain kombu publisher, killed right after a burst ------------------------------------------------------


class PublishKill(Scenario):
    name = "publish-kill"
    description = "plain kombu burst of persistent messages; kill -9 the broker ~0.2 s after the last publish"

    def faults_planned(self, options: RunOptions) -> int:
        return max(1, options.kills)

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        return 0.0  # a burst: as fast as the publisher goes

    def run(self, ctx: ChaosRun) -> None:
        started = time.time()
        ctx.stack.start_nodes(aux=False)
        node = ctx.stack.broker
        assert node is not None
        ctx.record.versions["broker"] = node.version()
        ctx.timings["setup_s"] = time.time() - started
        o = ctx.options
        rounds = max(1, o.kills)
        sizes = [o.tasks // rounds + (1 if r < o.tasks % rounds else 0) for r in range(rounds)]
        confirm = bool(ctx.setup.settings.get("rabbitmq_confirm_publish", True))
        quorum = ctx.setup.settings.get("rabbitmq_queue_type") == "quorum"
        ctx.record.details.update(
            confirm_publish=confirm if ctx.setup.broker == "rabbitmq" else None, rounds=rounds, messages_per_round=sizes
        )
        load_s = 0.0
        consumed_all = True
        for r, size in enumerate(sizes):
            queue = f"brokerstack.chaos.publish-kill.{ctx.run_id}.{r}"
            ctx.emit("load", f"round {r + 1}/{rounds}: publishing {size}", force=True)
            published_at, last_return = self._publish(ctx, node.url, queue, size, r, confirm, quorum)
            load_s += last_return - published_at
            # The fact under test: what a broker killed right after the publishes returned keeps.
            remaining = last_return + o.kill_after - time.time()
            if remaining > 0:
                time.sleep(remaining)
            killed_at = time.time()
            node.kill()
            fault = fault_entry(ctx, n=r + 1, action="kill", node=node.name, killed_at=killed_at)
            fault.update(published=size, publish_s=last_return - published_at, kill_after_s=killed_at - last_return)
            start_call = time.time()
            node.start()
            node.wait_ready()
            fault["restart_s"] = time.time() - start_call
            ctx.emit("drain", f"round {r + 1}/{rounds}: counting what survived", force=True)
            found, empty = self._consume(ctx, node.url, queue, quorum)
            consumed_all &= empty
            fault["survived"] = found
            fault["killed_at"] = killed_at - ctx.t0_wall
            ctx.record.faults.append(fault)
            ctx.faults_done = r + 1
        ctx.record.drained = consumed_all
        ctx.timings["load_s"] = load_s
        ctx.timings["restart_s"] = summarize([f["restart_s"] for f in ctx.record.faults])
        describe_errors(ctx)

    @staticmethod
    def _declarations(queue: str, quorum: bool) -> tuple[Any, Any]:
        from kombu import Exchange, Queue

        exchange = Exchange(queue, type="direct", durable=True)
        arguments = {"x-queue-type": "quorum"} if quorum else {}
        return exchange, Queue(queue, exchange, routing_key=queue, durable=True, queue_arguments=arguments)

    def _publish(
        self, ctx: ChaosRun, url: str, queue_name: str, size: int, round_: int, confirm: bool, quorum: bool
    ) -> tuple[float, float]:
        from kombu import Connection

        exchange, queue = self._declarations(queue_name, quorum)
        options = {"confirm_publish": confirm} if ctx.setup.broker == "rabbitmq" else {}
        conn = Connection(url, transport_options=options, connect_timeout=5)
        try:
            channel = conn.channel()
            queue(channel).declare()
            producer = conn.Producer(channel=channel, serializer="json")
            started = time.time()
            for i in range(size):
                task_id = f"chaos-{ctx.run_id}-{round_}-{i:07d}"
                attempt = ctx.ledger.invoke(task_id, "message")
                try:
                    producer.publish(
                        {"id": task_id}, exchange=exchange, routing_key=queue_name, delivery_mode=2, retry=False
                    )
                except Exception as exc:  # noqa: BLE001
                    ctx.ledger.fail(attempt, f"{type(exc).__name__}: {exc}")
                else:
                    ctx.ledger.ok(attempt)
                if i % 500 == 0:
                    ctx.emit("load", f"round {round_ + 1}: published {i}/{size}")
            return started, time.time()
        finally:
            # The socket is written; closing it is for after the kill (it may fail then).
            ctx.register_load(_Closer(conn))

    def _consume(self, ctx: ChaosRun, url: str, queue_name: str, quorum: bool) -> tuple[int, bool]:
        """Take everything the queue kept (no_ack gets); retried while the restarted broker does
        not serve the queue yet (a quorum queue answers INTERNAL_ERROR until its replica is back)."""
        from kombu import Connection

        _, queue = self._declarations(queue_name, quorum)
        found = 0
        deadline = time.monotonic() + CONSUME_RETRY_S
        while True:
            try:
                with Connection(url, connect_timeout=5) as conn:
                    bound = queue(conn.channel())
                    try:
                        while True:
                            message = bound.get(no_ack=True)
                            if message is None:
                                return found, True
                            ctx.executions.add(message.payload["id"])  # type: ignore[union-attr]
                            found += 1
                    except conn.channel_errors as exc:
                        # A queue that did not survive the restart (404) held nothing.
                        if "NOT_FOUND" in str(exc) or getattr(exc, "code", None) == 404:
                            return found, True
                        raise
            except Exception as exc:
                if time.monotonic() >= deadline:
                    raise
                log.debug("publish-kill: queue not served yet (%r); retrying", exc)
                ctx.pause(0.5, "waiting for the queue to be served again")


class _Closer:
    """Closes a connection at cleanup, quietly (its broker was killed under it)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def stop(self, timeout: float = 0) -> None:
        try:
            self.conn.release()
        except Exception:  # noqa: BLE001
            pass


# --- routine operations ---------------------------------------------------------------------------------------


class RollingDeploy(Scenario):
    name = "rolling-deploy"
    description = (
        "under load of 1-3 s tasks, SIGTERM each worker in turn (warm shutdown), wait for it to exit "
        "and start its replacement; K rounds"
    )
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def faults_planned(self, options: RunOptions) -> int:
        return options.kills * options.workers

    def longest_task(self, options: RunOptions) -> float:
        return DEPLOY_TASK_SECONDS[1]

    def resolve(self, options: RunOptions) -> RunOptions:
        if options.workers < 2:
            raise ValueError("rolling-deploy needs at least 2 workers: the others carry the load while one is replaced")
        return super().resolve(options)

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return DEPLOY_TASK_SECONDS[1] + 6.0  # the longest task's end, then a replacement's start

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        """Spread over the rounds, and below what the workers left during a replacement can run, so
        the backlog stays short and every shutdown finds tasks running."""
        faults = self.faults_planned(options)
        mean = sum(DEPLOY_TASK_SECONDS) / 2
        capacity = max(1, options.workers - 1) * (options.concurrency or 2) / mean
        spread = options.tasks / ((faults + 0.5) * self.fault_period(setup, options)) if faults else capacity
        return round(max(0.2, min(spread, capacity)), 2)

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points(ctx.faults_total)
        seed = ctx.seed

        def plan(index: int) -> tuple[str, list, str]:
            seconds = round(random.Random(f"{seed}-{index}").uniform(*DEPLOY_TASK_SECONDS), 2)
            return SLEEP_TASK, [seconds], "deploy"

        run_faulted_load(ctx, points, self.inject, plan=plan)
        finished_by: dict[str, set[str]] = {}
        for entry in ctx.executions.entries:
            if entry.event == "finish":
                finished_by.setdefault(entry.worker, set()).add(entry.task_id)
        for fault in ctx.record.faults:
            fault.pop("ref_at", None)
            ids = fault.pop("_running_ids")
            # A warm shutdown lets what runs finish where it runs: none of it should need another worker.
            fault["finished_by_victim"] = len(ids & finished_by.get(fault["node"], set()))
            fault["killed_at"] -= ctx.t0_wall
        ctx.timings["shutdown_s"] = summarize([f["shutdown_s"] for f in ctx.record.faults])
        ctx.timings["replacement_s"] = summarize([f["replacement_s"] for f in ctx.record.faults])
        ctx.record.details["rounds"] = o.kills
        forced = sum(1 for f in ctx.record.faults if not f["warm"])
        if forced:
            ctx.note(
                f"{forced} worker(s) did not finish their warm shutdown within {WARM_SHUTDOWN_TIMEOUT:.0f} s "
                "and were killed"
            )
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        # The oldest worker goes next: replacements join at the end, so each round takes every worker once.
        worker = ctx.stack.workers[0]
        ctx.wait_until(
            lambda: any(e.worker == worker.hostname for e in ctx.executions.running.values()),
            30,
            "the worker to run a task",
            phase="fault",
        )
        running = {e.task_id for e in ctx.executions.running.values() if e.worker == worker.hostname}
        ctx.emit("fault", f"deploy {n}/{ctx.faults_total}: SIGTERM {worker.name} ({len(running)} running)", force=True)
        signalled_at = time.time()
        took = worker.terminate(timeout=WARM_SHUTDOWN_TIMEOUT)
        exited_at = time.time()
        fault = fault_entry(ctx, n, "sigterm", worker.hostname, signalled_at)
        fault.update(
            round=(n - 1) // ctx.options.workers + 1,
            running=len(running),
            _running_ids=running,
            shutdown_s=exited_at - signalled_at,
            warm=took is not None,
            exit_code=worker.returncode,
        )
        ctx.emit("fault", f"deploy {n}/{ctx.faults_total}: starting the replacement", force=True)
        ctx.stack.replace_worker(worker, wait=True)
        ready_at = time.time()
        fault.update(replacement_s=ready_at - exited_at, ref_at=ready_at)
        return fault


class BrokerRestartMidTask(Scenario):
    name = "broker-restart-mid-task"
    description = "graceful broker stop/start K times while tasks longer than the restart (3-5 s) run"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return super().fault_period(setup, options) + options.long_task_seconds + MID_TASK_SPREAD

    def longest_task(self, options: RunOptions) -> float:
        return options.long_task_seconds + MID_TASK_SPREAD

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        points = ctx.fault_points()
        # Just before each fault point the stream carries long tasks, one per pool process, so tasks
        # are running when the broker goes away; the rest are no-ops that keep the producer busy.
        burst = max(2, o.workers * (o.concurrency or 1))
        long_indices = {i for p in points for i in range(max(0, p - burst), p)}
        seed = ctx.seed

        def plan(index: int) -> tuple[str, list, str]:
            if index in long_indices:
                low = o.long_task_seconds
                seconds = round(random.Random(f"{seed}-{index}").uniform(low, low + MID_TASK_SPREAD), 2)
                return SLEEP_TASK, [seconds], "long"
            return noop_plan(index)

        run_faulted_load(ctx, points, self.inject, plan=plan)
        finishes: dict[str, list[float]] = {}
        for entry in ctx.executions.entries:
            if entry.event == "finish":
                finishes.setdefault(entry.task_id, []).append(entry.t)
        for fault in ctx.record.faults:
            ids, ready = fault.pop("_running_ids"), fault["ready_at"]
            # Which of the tasks running at the stop finished only after the broker was back.
            fault["outlived_restart"] = sum(1 for i in ids if finishes.get(i) and min(finishes[i]) > ready)
        broker_recovery_metrics(ctx)
        describe_errors(ctx)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        node = ctx.stack.broker
        assert node is not None
        o = ctx.options

        def long_running() -> list[Any]:
            live = {w.hostname for w in ctx.stack.workers if w.is_running()}
            return [e for e in ctx.executions.running.values() if e.name == SLEEP_TASK and e.worker in live]

        if not ctx.wait_until(long_running, 120, "long tasks to run", phase="fault"):
            ctx.note(f"restart {n}: no long task was running within 120 s; restarting anyway")
        # Well inside the tasks, so they still run when the broker stops.
        ctx.pause(ctx.rng.uniform(0.1, max(0.2, o.long_task_seconds * 0.3)), "letting the tasks run")
        running = {e.task_id for e in long_running()}
        ctx.emit(
            "fault", f"restart {n}/{ctx.faults_total}: stopping {node.kind} ({len(running)} tasks running)", force=True
        )
        stopped_at = time.time()
        node.stop()
        fault = fault_entry(ctx, n, "stop", node.name, stopped_at)
        fault["dead_at"] = time.time()
        fault.update(stop_s=fault["dead_at"] - stopped_at, running=len(running), _running_ids=running)
        if o.down_seconds:
            ctx.pause(o.down_seconds, "broker down")
        ctx.emit("fault", f"restart {n}/{ctx.faults_total}: starting", force=True)
        return restart_node(node, fault, stopped_at)


class IdleKill(Scenario):
    name = "idle-kill"
    description = "kill -9 a prefork -c 2 worker 50-200 ms after its last task succeeded, the queue empty; K times"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def auto_rate(self, setup: Setup, options: RunOptions) -> float:
        return 0.0  # one task at a time: the next is published when the last one has run

    def run(self, ctx: ChaosRun) -> None:
        start_stack(ctx)
        o = ctx.options
        publisher = SinglePublisher(ctx.settings, ctx.ledger, id_prefix=f"chaos-{ctx.run_id}")
        ctx.register_load(publisher)
        rounds = max(1, o.kills)
        sizes = [o.tasks // rounds + (1 if r < o.tasks % rounds else 0) for r in range(rounds)]
        for r, size in enumerate(sizes):
            last = None
            for _ in range(size):
                task_id = publisher.publish(NOOP_TASK, [], "noop")
                if task_id is not None:
                    last = self._wait_finished(ctx, task_id) or last
                ctx.emit("load", f"round {r + 1}/{rounds}")
            if r < o.kills:
                if last is None:
                    ctx.note(f"idle-kill {r + 1}: no task ran in this round; no kill")
                    continue
                fault = self.inject(ctx, r + 1, last)
                if fault is not None:
                    ctx.record.faults.append(fault)
                ctx.faults_done = r + 1
        publisher.finish()
        finish_load(ctx, publisher)
        ctx.drain()
        ctx.timings["after_success_s"] = summarize([f["after_success_s"] for f in ctx.record.faults])
        ctx.timings["replacement_s"] = summarize([f["replacement_s"] for f in ctx.record.faults])
        describe_errors(ctx)

    @staticmethod
    def _wait_finished(ctx: ChaosRun, task_id: str, timeout: float = 120.0) -> Any:
        """The task's finish entry, read as soon as the worker wrote it (polled every IDLE_POLL)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in reversed(ctx.executions.poll()):
                if entry.event == "finish" and entry.task_id == task_id:
                    return entry
            if ctx.executions.finished.get(task_id):
                return next(e for e in reversed(ctx.executions.entries) if e.event == "finish" and e.task_id == task_id)
            ctx.emit("load", "waiting for the task to run")
            time.sleep(IDLE_POLL)
        ctx.note(f"task {task_id} did not run within {timeout:.0f} s")
        return None

    def inject(self, ctx: ChaosRun, n: int, last: Any) -> dict[str, Any] | None:
        worker = next((w for w in ctx.stack.workers if w.hostname == last.worker and w.is_running()), None)
        if worker is None:
            ctx.note(f"idle-kill {n}: the worker that ran the last task is gone; no kill")
            return None
        # One task at a time: the queue is empty once the last one has run (nothing acknowledged waits).
        waiting = ctx.ledger.acknowledged - sum(1 for _ in ctx.executions.finished)
        planned = ctx.rng.uniform(*IDLE_KILL_AFTER)
        # A planned instant, not a condition: sleep to it exactly (it is at most 200 ms away).
        delay = last.t + planned - time.time()
        if delay > 0:
            time.sleep(delay)
        killed_at = time.time()
        worker.kill()
        ctx.emit(
            "fault",
            f"idle-kill {n}/{ctx.faults_total}: killed {worker.name} {killed_at - last.t:.3f} s after its last task",
            force=True,
        )
        fault = fault_entry(ctx, n, "kill", worker.hostname, killed_at)
        fault.update(
            task_id=last.task_id, planned_after_s=planned, after_success_s=killed_at - last.t, waiting_in_queue=waiting
        )
        ctx.stack.replace_worker(worker, wait=True)
        fault["replacement_s"] = time.time() - killed_at
        fault["killed_at"] = killed_at - ctx.t0_wall
        return fault


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        BrokerKill(),
        BrokerRestart(),
        WorkerKill(),
        ProducerOutage(),
        PublishKill(),
        NodeLoss(),
        RollingDeploy(),
        BrokerRestartMidTask(),
        IdleKill(),
    )
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}") from None
