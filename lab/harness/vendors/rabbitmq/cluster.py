"""A RabbitMQ cluster of N nodes (node-loss, failover and partition scenarios).

Nodes find each other through classic_config peer discovery; start() waits
until cluster_status on the first node lists every member as running.

Docker topology (so that one node can be cut off from its peers while clients
still reach it): the nodes meet on an *internal* network of the cluster's own,
where their names resolve (Erlang distribution, rabbit@<name>); each is also
attached to Docker's default bridge, which carries its published AMQP port
(127.0.0.1:<port>) and nothing else: names do not resolve there and no node
knows another's address on it. An internal network has no gateway, so it never
carries published ports. partition(node) disconnects the node from the
internal network; heal() reattaches it under the same alias. The nodes run
with a short net_ticktime (NET_TICKTIME), so a cut is noticed in seconds rather
than a minute. The process driver's nodes share 127.0.0.1: it cannot partition.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.harness.nodes.base import (
    DEFAULT_READY_TIMEOUT,
    NodeError,
    RabbitOptions,
    StartedInContext,
    poll,
    random_suffix,
    track,
    untrack,
)
from lab.harness.nodes.factory import DriverChoice, resolve_driver

#: Deadline for all members to show up in cluster_status after they are ready.
FORMATION_TIMEOUT = 90.0

#: Pause between cluster_status calls (each one boots an Erlang CLI VM).
FORMATION_POLL_INTERVAL = 1.0

#: Docker nodes: seconds of silence after which an Erlang peer counts as down (Erlang's default
#: is 60, i.e. a partition noticed after 45-75 s); pause_minority acts on it.
NET_TICKTIME = 10
#: Docker's default bridge: the clients' path to every node (see the module docstring).
CLIENT_NETWORK = "bridge"
#: forget_cluster_node and growing quorum queues: each is one CLI call the node answers in seconds.
FORGET_TIMEOUT = 120.0


class RabbitCluster(StartedInContext):
    """size RabbitMQ nodes forming one cluster.

    Each node supports kill()/start()/restart()/wait_ready() like a lone node;
    url is kombu's failover form over all nodes.
    """

    def __init__(
        self,
        size: int = 3,
        driver: DriverChoice | None = None,
        rabbit: RabbitOptions | None = None,
        name: str | None = None,
        *,
        base_dir: str | Path | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        self.size = size
        self.driver = resolve_driver(driver)
        self.options = rabbit or RabbitOptions()
        self._closed = False
        self._dir: Path | None = None
        self._epmd: Any = None
        self._network: Any = None
        track(self)
        if self.driver == "process":
            self.name = name or f"bs{random_suffix()}"
            self.nodes: list[Any] = self._process_nodes(base_dir)
        else:
            self.name = name or f"brokerstack-test-rmqc-{random_suffix()}"
            self.nodes = self._docker_nodes()

    def _process_nodes(self, base_dir: str | Path | None) -> list[Any]:
        from lab.harness.nodes.process import base_dir_default, make_dir, write_owner
        from lab.harness.vendors.rabbitmq.nodes import Epmd, ProcessRabbitNode, make_erlang_home

        self._dir = (Path(base_dir) if base_dir is not None else base_dir_default()) / self.name
        make_dir(self._dir)
        write_owner(self._dir)
        self._epmd = Epmd(self._dir)
        home = make_erlang_home(self._dir / "home")
        names = [f"{self.name}-{i}" for i in range(1, self.size + 1)]
        peers = [f"{n}@localhost" for n in names]
        return [
            ProcessRabbitNode(
                n, self.options, base_dir=self._dir, epmd=self._epmd, erlang_home=home, cluster_nodes=peers
            )
            for n in names
        ]

    def _docker_nodes(self) -> list[Any]:
        from lab.harness.network import create_network

        self._network = create_network(self.name, internal=True)
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))
        names = [f"{self.name}-{i}" for i in range(1, self.size + 1)]
        peers = [f"rabbit@{n}" for n in names]
        node_class = _partitionable_rabbit_class()
        return [node_class(n, self.options, network=self._network, cookie=cookie, cluster_nodes=peers) for n in names]

    # -- addresses -------------------------------------------------------
    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """ "amqp://...;amqp://...": kombu/Celery try the nodes in turn."""
        return ";".join(self.urls)

    @property
    def node_names(self) -> list[str]:
        return [node.node_name for node in self.nodes]

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = DEFAULT_READY_TIMEOUT * 2) -> None:
        """Start every node and wait until all are running members of one cluster."""
        if self._closed:
            raise NodeError(f"cluster {self.name} is closed")
        if self.driver == "process":
            # RabbitMQ 3.10's classic_config discovery can form several
            # clusters when virgin nodes boot together: let the seed form it.
            seed, *others = self.nodes
            seed.start()
            seed.wait_ready(timeout)
        else:
            # In docker a peer's name resolves only once its container runs,
            # and lookups of absent ones stall boot for ~20 s each (the
            # engine's DNS forwards them upstream): start all at once.
            others = self.nodes
        for node in others:
            node.start()
        for node in others:
            node.wait_ready(timeout)
        self.wait_formed(FORMATION_TIMEOUT)

    def running_nodes(self, via: Any | None = None) -> list[str]:
        """Erlang names of the running members, as one node (default: the
        first running one) sees them."""
        if via is None:
            via = next((node for node in self.nodes if node.is_running()), None)
            if via is None:
                raise NodeError(f"cluster {self.name}: no node is running")
        status = json.loads(via.rabbitmqctl("cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def wait_formed(self, timeout: float = FORMATION_TIMEOUT, expected: Sequence[Any] | None = None) -> None:
        """Poll cluster_status until exactly the expected nodes (default: all)
        are running members."""
        members = list(expected) if expected is not None else self.nodes
        want = sorted(node.node_name for node in members)
        seen: list[str] = []

        def formed() -> bool:
            nonlocal seen
            try:
                seen = self.running_nodes(via=members[0])
            except NodeError as exc:
                # A node paused by pause_minority (or still booting its app) answers the CLI
                # but not cluster_status: not formed yet.
                seen = [f"({exc})".splitlines()[0]]
                return False
            return seen == want

        poll(
            formed,
            timeout,
            FORMATION_POLL_INTERVAL,
            f"cluster {self.name} formation ({len(want)} nodes)",
            on_timeout=lambda: f"wanted {want}, last saw {seen}\n{members[0]._log_excerpt()}",
        )

    # -- replacing a member ----------------------------------------------
    def forget(self, node: Any) -> str:
        """Remove the stopped ``node`` from the cluster, from a running peer (``rabbitmqctl
        forget_cluster_node``): what an operator does for a member whose data is gone, which its
        peers would otherwise refuse ("thinks it's clustered with ..., but ... disagrees"). Its
        quorum queue replicas go with it. Returns the Erlang name of the peer that did it."""
        peers = [peer for peer in self.nodes if peer is not node and peer.is_running()]
        errors: list[str] = []
        for peer in peers:
            try:
                peer.rabbitmqctl("forget_cluster_node", node.node_name, timeout=FORGET_TIMEOUT)
                return str(peer.node_name)
            except NodeError as exc:
                errors.append(str(exc).splitlines()[0])
        raise NodeError(
            f"cluster {self.name}: no running peer could forget {node.node_name}: {errors or 'none running'}"
        )

    def grow_quorum_queues(self, node: Any) -> int:
        """Add a replica on ``node`` to every quorum queue that lacks one (what ``rabbitmq-queues
        grow <node> all`` does), through ``rabbitmqctl eval`` on ``node``; the number of queues grown."""
        grow = f'rabbit_quorum_queue:grow(\'{node.node_name}\', <<".*">>, <<".*">>, all)'
        expr = f"length([ok || {{_, {{ok, _}}}} <- {grow}])."
        out = node.rabbitmqctl("eval", expr, timeout=FORGET_TIMEOUT).strip()
        try:
            return int(out.splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise NodeError(f"growing quorum queues onto {node.node_name} answered {out!r}") from exc

    # -- partitions ------------------------------------------------------
    @property
    def can_partition(self) -> bool:
        return self.driver == "docker"

    def partition(self, node: Any) -> Any:
        """Cut ``node`` off from its peers (docker; see the module docstring); its clients still
        reach it. Returns a lab.harness.network.Partition whose heal() reattaches it."""
        from lab.harness.network import PROCESS_CANNOT_PARTITION, Link, PartitionError, cut

        if not self.can_partition:
            raise PartitionError(PROCESS_CANNOT_PARTITION)
        return cut([Link(self._network.name, node.name, aliases=(node.name,))])

    def close(self) -> None:
        """Remove every node and the cluster's shared resources; idempotent."""
        if self._closed:
            return
        self._closed = True
        untrack(self)
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.close()
            except Exception as exc:  # noqa: BLE001 - close the rest, report after
                errors.append(exc)
        try:
            if self._epmd is not None:
                self._epmd.close()
            if self._network is not None:
                self._network.remove()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        if errors:
            raise NodeError(f"cluster {self.name}: {len(errors)} node(s) failed to close: {errors}")

    def __repr__(self) -> str:
        return f"<RabbitCluster {self.name} {self.driver} x{self.size}>"


def _partitionable_rabbit_class() -> type:
    """DockerRabbitNode on the cluster's internal network plus the clients' bridge (built lazily:
    the docker driver's module needs the Docker SDK)."""
    from lab.harness.nodes.docker import docker_client
    from lab.harness.vendors.rabbitmq.nodes import DockerRabbitNode

    class PartitionableRabbitNode(DockerRabbitNode):
        def _build(self) -> Any:
            container = super()._build()
            container.with_env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", f"-kernel net_ticktime {NET_TICKTIME}")
            return container

        def _create_and_start(self) -> None:
            super()._create_and_start()
            # Right after the start, long before the broker listens: wait_ready() polls the
            # published port, which only exists once the bridge is attached.
            client = docker_client()
            try:
                client.networks.get(CLIENT_NETWORK).connect(self.name)
            finally:
                client.close()

    return PartitionableRabbitNode
