"""High availability: the node that leads is killed (``failover``) or cut off from its peers
while its clients still reach it (``partition``), K times under steady Celery load.

* Redis (a Sentinel group: primary, 2 replicas, 3 Sentinels; the app finds the primary through
  the sentinels): ``failover`` kills -9 the primary; the sentinels promote a replica; the old
  primary is restarted and rejoins as a replica. ``partition`` cuts the primary off from the
  replicas and the sentinels (lab.harness.vendors.redis.sentinel shows how); producers and
  workers still talk to it, the sentinels promote a replica meanwhile (two primaries: the split
  brain), and after ``down_seconds`` more the cut is healed and a sentinel turns the old primary
  into a replica of the new one, which drops what it accepted alone.
* RabbitMQ (a 3-node cluster, pause_minority): ``failover`` kills -9 the node that leads the
  ``default`` work queue (quorum: its Raft leader; classic: the node holding it), keeps it down
  ``down_seconds`` and restarts it; ``partition`` cuts that node off from the other two
  (lab.harness.vendors.rabbitmq.cluster), holds the cut until the others count it as down (and,
  on quorum queues, another node leads), then ``down_seconds`` more, and heals it.

Every fault entry says which node led before and after (``leader_before``/``leader_after``: the
primary's or the queue leader's node name), how long until another led (``promoted_s``, None if
none did in PROMOTION_WAIT, and on classic queues, which live on one node and are not waited
for), on RabbitMQ partitions how long until the others counted the node as down
(``noticed_s``), and how long until the node served again as a member (``rejoined_s``, from
the fault); the shared recovery metrics count from the fault itself, since
the rest of the group keeps serving. Partitions need the docker driver
(lab.harness.network.PROCESS_CANNOT_PARTITION).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from lab.experiments.chaos.runner import RunOptions, summarize
from lab.experiments.chaos.scenarios.base import (
    Scenario,
    broker_recovery_metrics,
    describe_errors,
    ensure_workers,
    fault_entry,
    run_faulted_load,
    start_stack,
)
from lab.harness.network import PROCESS_CANNOT_PARTITION, PartitionError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup

#: How long a fault waits for another node to lead (Sentinel: DOWN_AFTER_MS plus a vote; quorum
#: queues: a Raft election; pause_minority: NET_TICKTIME) before it notes that none did.
PROMOTION_WAIT = 60.0
#: The queue whose leader is the target on RabbitMQ (the one the load's no-ops go to).
LEADING_QUEUE = "default"
#: How often the RabbitMQ queue leader is asked for (each answer is a CLI call of ~1 s).
LEADER_POLL = 0.5


class HAScenario(Scenario):
    """The shared skeleton: a Sentinel group or a RabbitMQ cluster, steady load, one fault per point."""

    cluster = True
    defaults: ClassVar[dict[str, Any]] = {"pool": "solo", "concurrency": 1, "down_seconds": 3.0}

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        # A promotion (~5 s) and the rejoin of the old node (a full resync: ~15 s on Redis).
        return (options.down_seconds or 0.0) + 20.0

    def run(self, ctx: ChaosRun) -> None:
        self.check_driver(ctx)
        start_stack(ctx)
        ctx.record.details["leader_at_start"] = self.leader(ctx)
        run_faulted_load(ctx, ctx.fault_points(), self.inject)
        broker_recovery_metrics(ctx)
        promoted = [f.get("promoted_s") for f in ctx.record.faults]
        ctx.timings["promoted_s"] = summarize(promoted)
        ctx.timings["rejoined_s"] = summarize([f.get("rejoined_s") for f in ctx.record.faults])
        describe_errors(ctx)

    def check_driver(self, ctx: ChaosRun) -> None:
        """Raise before anything starts if the driver cannot do this scenario."""

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        raise NotImplementedError

    # --- who leads ---------------------------------------------------------------------------

    def leader(self, ctx: ChaosRun, exclude: Any = None) -> str | None:
        """The Redis primary's node name, or the node leading the work queue on RabbitMQ as a
        running member other than ``exclude`` (the node hit, which may be paused) sees it."""
        if ctx.stack.sentinel is not None:
            return str(ctx.stack.sentinel.primary().name)
        assert ctx.stack.cluster is not None
        via = next((m for m in ctx.stack.cluster.nodes if m is not exclude and m.is_running()), None)
        try:
            leader = ctx.stack.queue_leader(LEADING_QUEUE, via=via)
        except Exception as exc:  # noqa: BLE001 - a member may be down or paused: no answer is an answer
            log.debug("no queue leader: %r", exc)
            return None
        return self._member(ctx, leader)

    def _member(self, ctx: ChaosRun, leader: str | None) -> str | None:
        """The lab name of the cluster member whose Erlang name is ``leader``."""
        assert ctx.stack.cluster is not None
        return next((node.name for node in ctx.stack.cluster.nodes if node.node_name == leader), None)

    def leading_node(self, ctx: ChaosRun, n: int) -> tuple[Any, str | None]:
        """(the node to hit, its name as leader); on RabbitMQ, members in turn if none answers."""
        if ctx.stack.sentinel is not None:
            node = ctx.stack.sentinel.primary()
            return node, node.name
        cluster = ctx.stack.cluster
        assert cluster is not None
        name = self.leader(ctx)
        node = next((m for m in cluster.nodes if m.name == name), None)
        if node is None:
            ctx.note(f"fault {n}: no node reported leading {LEADING_QUEUE}; taking members in turn")
            node = cluster.nodes[(n - 1) % len(cluster.nodes)]
        return node, name

    def wait_new_leader(self, ctx: ChaosRun, old: Any, since: float) -> tuple[str | None, float | None]:
        """Until a node other than ``old`` leads: (its name, seconds since ``since``), or
        (None, None) after PROMOTION_WAIT (a classic queue has no other node to move to)."""
        sentinel = ctx.stack.sentinel
        if sentinel is not None:
            try:
                new = sentinel.wait_promoted(old, PROMOTION_WAIT)
            except Exception as exc:  # noqa: BLE001 - noted, and the run goes on
                ctx.note(f"no replica was promoted within {PROMOTION_WAIT:.0f} s: {exc}")
                return None, None
            return new.name, time.time() - since
        if ctx.setup.settings.get("rabbitmq_queue_type") == "classic":
            # A classic queue lives on one node: no other node can take it over.
            return None, None
        found = ctx.wait_until(
            lambda: (name := self.leader(ctx, exclude=old)) not in (None, old.name) and name,
            PROMOTION_WAIT,
            "another node to lead",
            phase="fault",
        )
        if not found:
            return None, None
        return found, time.time() - since

    def wait_cut_noticed(self, ctx: ChaosRun, victim: Any, since: float) -> float | None:
        """RabbitMQ: until the other members no longer count ``victim`` as running (the cut is
        noticed, after up to NET_TICKTIME; pause_minority then pauses the victim); seconds since
        ``since``, or None after PROMOTION_WAIT. Redis: a promotion already says so."""
        cluster = ctx.stack.cluster
        if cluster is None:
            return None
        other = next(m for m in cluster.nodes if m is not victim)

        def noticed() -> bool:
            try:
                return victim.node_name not in cluster.running_nodes(via=other)
            except Exception:  # noqa: BLE001 - the CLI call failed: ask again
                return False

        if ctx.wait_until(noticed, PROMOTION_WAIT, "the cut to be noticed", phase="fault"):
            return time.time() - since
        ctx.note(f"the other members still counted {victim.name} as running {PROMOTION_WAIT:.0f} s after the cut")
        return None

    def rejoin(self, ctx: ChaosRun, node: Any, fault: dict[str, Any]) -> None:
        """Until ``node`` is a serving member again (a synced replica; a running cluster member).
        Workers that exited meanwhile (a broker error they do not retry) are started again, as
        their supervisor would, and counted in the fault (``workers_restarted``)."""
        if ctx.stack.sentinel is not None:
            ctx.stack.sentinel.wait_replica(node)
        else:
            assert ctx.stack.cluster is not None
            ctx.stack.cluster.wait_formed()
        exited = [w for w in ctx.stack.workers if not w.is_running()]
        fault["workers_restarted"] = len(exited)
        if exited:
            ensure_workers(ctx)


class Failover(HAScenario):
    name = "failover"
    description = (
        "kill -9 the Redis primary (Sentinel promotes a replica) / the node leading the work queue "
        "(a new leader is elected) K times under load; restart it as a replica/member"
    )

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        victim, before = self.leading_node(ctx, n)
        ctx.emit("fault", f"kill {n}/{ctx.faults_total}: {victim.name} (leading: {before})", force=True)
        killed_at = time.time()
        victim.kill()
        fault = fault_entry(ctx, n, "kill", victim.name, killed_at)
        fault.update(dead_at=time.time(), leader_before=before)
        after, promoted_s = self.wait_new_leader(ctx, victim, killed_at)
        fault.update(leader_after=after, promoted_s=promoted_s)
        if ctx.options.down_seconds:
            ctx.pause(ctx.options.down_seconds, "node down")
        ctx.emit("fault", f"kill {n}/{ctx.faults_total}: restarting {victim.name}", force=True)
        start_call = time.time()
        victim.start()
        victim.wait_ready()
        self.rejoin(ctx, victim, fault)
        ready_at = time.time()
        if after is None:
            # A classic queue's node is back: whoever leads now.
            fault["leader_after"] = self.leader(ctx)
        # The group kept serving: recovery counts from the kill, not from the node's return.
        fault.update(
            ready_at=ready_at,
            restart_s=ready_at - start_call,
            down_s=ready_at - killed_at,
            rejoined_s=ready_at - killed_at,
            ref_at=fault["dead_at"],
        )
        return fault


class Partition(HAScenario):
    name = "partition"
    description = (
        "cut the Redis primary / the node leading the work queue off from its peers while clients still "
        "reach it (the split brain), K times under load; heal after down_seconds (docker driver)"
    )

    def check_driver(self, ctx: ChaosRun) -> None:
        if ctx.driver != "docker":
            raise PartitionError(PROCESS_CANNOT_PARTITION)

    def inject(self, ctx: ChaosRun, n: int) -> dict[str, Any]:
        group: Any = ctx.stack.sentinel or ctx.stack.cluster
        victim, before = self.leading_node(ctx, n)
        ctx.emit("fault", f"partition {n}/{ctx.faults_total}: {victim.name} (leading: {before})", force=True)
        cut_at = time.time()
        cut = group.partition(victim)
        fault = fault_entry(ctx, n, "partition", victim.name, cut_at)
        fault.update(dead_at=time.time(), leader_before=before)
        try:
            after, promoted_s = self.wait_new_leader(ctx, victim, cut_at)
            fault.update(leader_after=after, promoted_s=promoted_s)
            if ctx.stack.cluster is not None:
                fault["noticed_s"] = self.wait_cut_noticed(ctx, victim, cut_at)
            if ctx.options.down_seconds:
                ctx.pause(ctx.options.down_seconds, "partitioned")
        finally:
            healed_at = time.time()
            cut.heal()
        fault["partition_s"] = healed_at - cut_at
        ctx.emit("fault", f"partition {n}/{ctx.faults_total}: healed, waiting for {victim.name}", force=True)
        self.rejoin(ctx, victim, fault)
        ready_at = time.time()
        if fault.get("leader_after") is None:
            fault["leader_after"] = self.leader(ctx)
        fault.update(
            ready_at=ready_at, rejoined_s=ready_at - cut_at, healed_at=healed_at - ctx.t0_wall, ref_at=fault["dead_at"]
        )
        return fault
