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
"""

from __future__ import annotations

import bisect
import logging
import os
import signal
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from lab.chaos.load import ApiLoad, CeleryLoad, noop_plan
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


class Scenario:
    name: ClassVar[str]
    description: ClassVar[str]
    #: Runs on a RabbitMQ cluster (setup.cluster_size nodes) instead of one node.
    cluster: ClassVar[bool] = False
    #: Defaults for the RunOptions fields left at None.
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 0.0}

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

    def run(self, ctx: ChaosRun) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "cluster": self.cluster}


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
    ctx.wait_until(lambda: ctx.ledger.attempted >= point or load.done, 24 * 3600,
                   f"load to reach attempt {point}", phase="load")
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
        ctx.note(f"producer or workers had not recovered {RECOVERY_WAIT:.0f} s after a fault; "
                 "injecting the next one anyway")


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


def finish_load(ctx: ChaosRun, load: Any) -> None:
    ctx.wait_until(lambda: load.done, 24 * 3600, "the load to finish", phase="load")
    errors = [load.error] if getattr(load, "error", None) else list(getattr(load, "errors", []))
    if errors:
        raise RuntimeError(f"the producer failed: {errors[0]!r}") from errors[0]
    ctx.timings["load_s"] = (load.finished_at or time.time()) - (load.started_at or time.time())
    acked = ctx.ledger.acknowledged
    ctx.timings["ack_rate_per_s"] = acked / ctx.timings["load_s"] if ctx.timings["load_s"] > 0 else None


def fault_entry(ctx: ChaosRun, n: int, action: str, node: str, killed_at: float) -> dict[str, Any]:
    return {"n": n, "action": action, "node": node, "at_s": killed_at - ctx.t0_wall,
            "at_attempt": ctx.ledger.attempted, "killed_at": killed_at}


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
    return max(b - a for a, b in zip(window, window[1:], strict=False))


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
        o = ctx.options
        points = ctx.fault_points()
        load = CeleryLoad(ctx.stack.settings, ctx.ledger, total=o.tasks, rate=o.rate,
                          id_prefix=f"chaos-{ctx.run_id}", threads=o.producers, limit=first_limit(points, o.tasks))
        ctx.register_load(load)
        load.start()
        run_faults(ctx, load, points, self.inject)
        finish_load(ctx, load)
        ctx.drain()
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
        fault.update(ready_at=ready_at, restart_s=ready_at - start_call, down_s=ready_at - killed_at,
                     ref_at=fault["dead_at"])
        return fault


# --- worker kills -------------------------------------------------------------------------------------------


class WorkerKill(Scenario):
    name = "worker-kill"
    description = "kill -9 a worker (or one of its pool processes) while it runs long tasks; measure redelivery"
    defaults: ClassVar[dict[str, Any]] = {"pool": "prefork", "concurrency": 2, "down_seconds": 0.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        redelivery = options.visibility_timeout + options.restore_interval * options.restore_throttle
        return options.long_task_seconds + 4.0 + (redelivery if setup.broker == "redis" else 1.0)

    def run(self, ctx: ChaosRun) -> None:
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

        load = CeleryLoad(ctx.stack.settings, ctx.ledger, total=o.tasks, rate=o.rate, id_prefix=f"chaos-{ctx.run_id}",
                          plan=plan, threads=o.producers, limit=first_limit(points, o.tasks))
        ctx.register_load(load)
        load.start()

        def inject(ctx: ChaosRun, n: int) -> dict[str, Any] | None:
            target = o.kill_target if o.kill_target != "both" else ("worker", "child")[(n - 1) % 2]
            return self.kill_one(ctx, n, target)

        run_faults(ctx, load, points, inject, wait_recovery=False)
        finish_load(ctx, load)
        ctx.drain()
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
        victim_start = ctx.wait_until(lambda: self._running_long(ctx), 300, "a worker to run a long task",
                                      phase="fault")
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

    @staticmethod
    def _running_long(ctx: ChaosRun) -> Any:
        live = {w.hostname for w in ctx.stack.workers if w.is_running()}
        candidates = [
            e for e in ctx.executions.running.values()
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
        settings = ctx.stack.settings
        api = ctx.stack.start_api()
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        points = ctx.fault_points()
        load = ApiLoad(api.url, ctx.ledger, total=o.tasks, rate=o.rate, clients=o.clients,
                       request_timeout=o.publish_timeout + 10, api_key=api_key, limit=first_limit(points, o.tasks))
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
        ctx.record.details.update(confirm_publish=confirm if ctx.setup.broker == "rabbitmq" else None,
                                  rounds=rounds, messages_per_round=sizes)
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

    def _publish(self, ctx: ChaosRun, url: str, queue_name: str, size: int, round_: int, confirm: bool,
                 quorum: bool) -> tuple[float, float]:
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
                    producer.publish({"id": task_id}, exchange=exchange, routing_key=queue_name,
                                     delivery_mode=2, retry=False)
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
            except Exception as exc:  # noqa: BLE001 - not served yet: try again until the deadline
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


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (BrokerKill(), BrokerRestart(), WorkerKill(), ProducerOutage(), PublishKill(), NodeLoss())
}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; one of: {', '.join(SCENARIOS)}") from None
