"""Machine crashes: the broker's data directory on LazyFS, and at each fault the power is cut.

A ``kill -9`` loses nothing the broker handed to the kernel, so every durable setup looks the same
under ``broker-kill``. Here each broker node keeps its data on its own LazyFS mount
(lab.harness.nodes.lazyfs): after boot the mount is checkpointed (a node up for a while has its
boot files on disk), the load runs as in ``broker-kill``, and each fault is a power cut of the
broker's machine: ``kill -9`` of the broker, then ``lazyfs::clear-cache`` (every byte it wrote and
did not fsync is gone), then a restart on what is left. The kill comes first so that nothing the
broker writes between the two steps survives in LazyFS' cache. Workers, the producer and the
ledger run on other machines: they stay up (``fault_model`` in the record says so).

LazyFS keeps unsynced bytes until told otherwise; a Linux kernel writes a dirty page back once it
is ~30 s old (``vm.dirty_expire_centisecs``, checked every 5 s). Without a model of that, a node
that booted twice carries its *second* boot's unsynced files into every later cut, however long it
has been up since. RabbitMQ rewrites Mnesia's ``schema.DAT`` (a DETS file, never fsynced) at every
boot; a later cut then left an empty or torn ``schema.DAT`` ("Cannot read schema ...
not_a_dets_file") and a node that would not boot: what a real node gets only when the power goes
again within ~30 s of a boot. So after every reboot, once the victims serve again (and the
cluster has formed), every mount of the run is checkpointed too, and each fault records how long
after the last checkpoint it came (``since_checkpoint_s``): when that is at least WRITEBACK_S, the
checkpoint wrote only what a kernel would have written back by the cut, so the model is never
kinder than a real machine (it is harsher for everything written since the checkpoint).

A node that still does not boot on what survived is recovered as an operator would: a Redis AOF
with ``redis-check-aof --fix``; a RabbitMQ node with an emptied data directory, and in a cluster
``forget_cluster_node`` on a running peer first (a member whose data is gone cannot rejoin under its
old identity), then its quorum queue replicas grown back (lab.harness.vendors.rabbitmq.cluster).
The record lists each such node (``not_booted``); what it cost is in the counts.

* ``power-loss``       the single broker node (Redis, or one RabbitMQ node).
* ``power-loss-node``  a 3-node RabbitMQ cluster (quorum queues): the machine of the queue
                       leader's node loses power; the others keep serving.
* ``power-loss-all``   the same cluster: all three machines lose power at once (what quorum queues'
                       fsync before confirm is for), then all three boot again.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from lab.experiments.chaos.runner import RunOptions
from lab.experiments.chaos.scenarios.base import (
    Scenario,
    broker_recovery_metrics,
    describe_errors,
    fault_entry,
    run_faulted_load,
    start_stack,
)
from lab.harness.nodes import NodeError
from lab.harness.nodes.lazyfs import LazyFSMount, LazyFSUnavailable, unavailable_reason

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from lab.experiments.chaos.runner import ChaosRun
    from lab.harness.setups import Setup

#: What the record says was cut (the report and readers tell a machine crash from a process kill).
FAULT_MODEL = (
    "power loss of the broker's machine: kill -9 of the broker, then LazyFS drops every byte of its "
    "data directory not fsynced (lazyfs::clear-cache); workers, producer and ledger run elsewhere and stay up"
)
#: Added to FAULT_MODEL in records written since the writeback model (see the module docstring).
WRITEBACK_MODEL = (
    "; after the first boot and after every reboot, once the nodes serve again, every node's disk is "
    "checkpointed (lazyfs::cache-checkpoint), standing for the kernel's writeback of dirty pages older than "
    "~30 s: a cut at least {writeback:.0f} s after that checkpoint (since_checkpoint_s) loses nothing a real "
    "machine would have kept"
)
#: Seconds after which a kernel has surely written a dirty page back: vm.dirty_expire_centisecs
#: (30 s) plus one period of the flusher threads (vm.dirty_writeback_centisecs, 5 s).
WRITEBACK_S = 35.0
#: The cluster scenarios' fault period (sizes the automatic rate): long enough that, with the seed's
#: jitter, a cut comes WRITEBACK_S or more after the previous reboot's checkpoint.
CLUSTER_FAULT_PERIOD = 80.0
#: How long a node may take to boot again on what survived (RabbitMQ replays its logs).
RESTART_TIMEOUT = 180.0
#: A broker log line's timestamp, level and Erlang pid (left out of the notes).
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:.+]+\s+(\[\w+\]\s+)?(<[\d.]+>\s+)?")


class PowerLoss(Scenario):
    name = "power-loss"
    description = (
        "the broker's data on LazyFS; K times under load: kill -9 and drop what was not fsynced (a power cut), "
        "restart on what is left"
    )
    #: Which cluster nodes lose power at each fault: "one" (the queue leader's) or "all".
    victims: ClassVar[str] = "one"

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return setup.vendor.power_cut_period

    def run(self, ctx: ChaosRun) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise LazyFSUnavailable(f"{self.name} needs LazyFS: {reason}")
        mounts: dict[str, LazyFSMount] = {}

        def on_lazyfs(node: Any) -> LazyFSMount:
            mount = LazyFSMount(name=f"lazyfs-{node.name}").start()
            mounts[node.name] = mount
            node.data_mount = mount.path
            node.vendor.prepare_for_lazyfs(node)
            return mount

        ctx.stack.prepare_node = on_lazyfs
        ctx.record.details["fault_model"] = FAULT_MODEL + WRITEBACK_MODEL.format(writeback=WRITEBACK_S)
        ctx.record.details["victims"] = self.victims if self.cluster else "the broker"
        ctx.record.details["writeback_s"] = WRITEBACK_S
        start_stack(ctx)
        # A node that has been up for a while has its boot files on disk.
        checkpoint_all(mounts)
        points = ctx.fault_points()
        run_faulted_load(ctx, points, lambda ctx, n: self.inject(ctx, n, mounts))
        broker_recovery_metrics(ctx)
        describe_errors(ctx)
        repairs = [f["aof_repair"] for f in ctx.record.faults if f.get("aof_repair")]
        if repairs:
            ctx.note(f"Redis refused {len(repairs)} AOF(s) after a power cut; redis-check-aof --fix repaired them")
        early = [f["n"] for f in ctx.record.faults if f.get("since_checkpoint_s", WRITEBACK_S) < WRITEBACK_S]
        if early:
            ctx.note(
                f"power cut(s) {early} came less than {WRITEBACK_S:.0f} s after the last checkpoint: files written "
                "shortly before it were kept, which a real machine might not have written back yet"
            )

    def _victims(self, ctx: ChaosRun, n: int) -> list[Any]:
        if not self.cluster:
            assert ctx.stack.broker is not None
            return [ctx.stack.broker]
        cluster = ctx.stack.cluster
        assert cluster is not None
        if self.victims == "all":
            return list(cluster.nodes)
        leader = None
        try:
            leader = ctx.stack.queue_leader("default")
        except Exception as exc:  # noqa: BLE001 - fall back to taking turns
            ctx.note(f"could not find the queue leader: {exc!r}")
        victim = next((node for node in cluster.nodes if node.node_name == leader), None)
        return [victim if victim is not None else cluster.nodes[(n - 1) % len(cluster.nodes)]]

    def inject(self, ctx: ChaosRun, n: int, mounts: dict[str, LazyFSMount]) -> dict[str, Any]:
        victims = self._victims(ctx, n)
        names = ", ".join(node.name for node in victims)
        ctx.emit("fault", f"power cut {n}/{ctx.faults_total}: {names}", force=True)
        killed_at = time.time()
        for node in victims:
            node.kill()
        dead_at = time.time()
        dropped = [mounts[node.name].clear_cache() for node in victims]
        fault = fault_entry(ctx, n, "power-loss", names, killed_at)
        since = killed_at - min(last_checkpoint(mounts[node.name]) for node in victims)
        fault.update(dead_at=dead_at, nodes=len(victims), clear_cache_s=max(dropped), since_checkpoint_s=since)
        if ctx.options.down_seconds:
            ctx.pause(ctx.options.down_seconds, "broker machine down")
        ctx.emit("fault", f"power cut {n}/{ctx.faults_total}: booting again", force=True)
        start_call = time.time()
        for node in victims:
            node.start()
        for node in victims:
            self._wait_booted(ctx, node, fault)
        if self.cluster:
            assert ctx.stack.cluster is not None
            ctx.stack.cluster.wait_formed()
        ready_at = time.time()
        # What this boot wrote, a kernel writes back within WRITEBACK_S (see the module docstring).
        fault["checkpoint_s"] = checkpoint_all(mounts)
        # One node of a cluster: the others kept serving, so recovery counts from the cut.
        ref_at = dead_at if self.cluster and len(victims) < len(ctx.stack.broker_nodes) else ready_at
        fault.update(ready_at=ready_at, restart_s=ready_at - start_call, down_s=ready_at - killed_at, ref_at=ref_at)
        return fault

    def _wait_booted(self, ctx: ChaosRun, node: Any, fault: dict[str, Any]) -> None:
        """Wait until ``node`` serves again. What an operator would do when it will not: a Redis
        that refuses its AOF gets ``redis-check-aof --fix``; a node that still does not boot on
        what survived is started afresh on an emptied data directory (everything it held is
        gone, and counted lost). The record says which happened."""
        try:
            node.wait_ready(RESTART_TIMEOUT)
            return
        except NodeError as exc:
            error = str(exc)
        node.kill()
        repaired = None if fault.get("aof_repair") else node.vendor.repair_after_power_loss(node, error)
        if repaired is not None:
            ctx.note(f"power cut {fault['n']}: the broker would not load what survived; ran its repair tool")
            fault["aof_repair"] = repaired
            node.start()
            self._wait_booted(ctx, node, fault)
            return
        cause = _first_error(error)
        cluster = ctx.stack.cluster if self.cluster else None
        how = (
            "forgotten by its peers (forget_cluster_node), its data directory emptied, started afresh and its "
            "quorum queue replicas grown back"
            if cluster is not None
            else "its data directory emptied and started afresh"
        )
        ctx.note(
            f"power cut {fault['n']}: {node.name} did not boot again on what survived ({cause}); {how}, as an "
            "operator would to get service back (what that lost is in the counts)"
        )
        fault.setdefault("not_booted", []).append({"node": node.name, "error": cause, "recovery": how})
        if cluster is not None:
            cluster.forget(node)
        wipe_data(node)
        node.start()
        node.wait_ready(RESTART_TIMEOUT)
        if cluster is not None:
            cluster.wait_formed()
            grown = cluster.grow_quorum_queues(node)
            fault["not_booted"][-1]["replicas_grown"] = grown


def checkpoint_all(mounts: dict[str, LazyFSMount]) -> float:
    """Checkpoint every mount of the run; the longest it took (seconds)."""
    return max((mount.checkpoint() for mount in mounts.values()), default=0.0)


def last_checkpoint(mount: LazyFSMount) -> float:
    """Wall time of the mount's last checkpoint (0.0 if never)."""
    done = [cast(float, e["at"]) for e in mount.events if e["command"] == "lazyfs::cache-checkpoint"]
    return done[-1] if done else 0.0


def _first_error(text: str) -> str:
    """The broker's first error line from a NodeError's log excerpt (else its first line)."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    marker = next((i for i, line in enumerate(lines) if line.startswith("--- first error lines")), None)
    if marker is not None and marker + 1 < len(lines):
        return " ".join(lines[marker + 1 : marker + 4])[:300]
    return lines[0][:300] if lines else "?"


def wipe_data(node: Any) -> None:
    """Empty a stopped node's data directory (through the mount: what is gone is gone for good)."""
    mount = node.data_mount
    assert mount is not None
    for child in list(mount.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    node.vendor.after_wipe(node)


class PowerLossNode(PowerLoss):
    name = "power-loss-node"
    description = "3-node RabbitMQ cluster on LazyFS: the queue leader's machine loses power K times under load"
    cluster = True
    victims = "one"

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return CLUSTER_FAULT_PERIOD


class PowerLossAll(PowerLoss):
    name = "power-loss-all"
    description = "3-node RabbitMQ cluster on LazyFS: all three machines lose power at once, K times under load"
    cluster = True
    victims = "all"

    def fault_period(self, setup: Setup, options: RunOptions) -> float:
        return CLUSTER_FAULT_PERIOD
