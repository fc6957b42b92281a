"""Faults of the broker itself: kill -9, graceful restart, one cluster node lost."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.runner import RunOptions
from lab.experiments.chaos.scenarios.base import (
    Scenario,
    broker_recovery_metrics,
    describe_errors,
    fault_entry,
    restart_node,
    run_faulted_load,
    start_stack,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup


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
