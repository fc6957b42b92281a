"""A RabbitMQ cluster of N nodes (quorum-queue node-loss scenarios).

Nodes find each other through classic_config peer discovery; start() waits
until cluster_status on the first node lists every member as running.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import DEFAULT_READY_TIMEOUT, NodeError, RabbitOptions, poll, random_suffix, track, untrack
from .factory import DriverChoice, resolve_driver

#: Deadline for all members to show up in cluster_status after they are ready.
FORMATION_TIMEOUT = 90.0

#: Pause between cluster_status calls (each one boots an Erlang CLI VM).
FORMATION_POLL_INTERVAL = 1.0


class RabbitCluster:
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
        from .process import (
            Epmd,
            ProcessRabbitNode,
            base_dir_default,
            make_dir,
            make_erlang_home,
            write_owner,
        )

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
        from .docker import DockerRabbitNode, create_network

        self._network = create_network(self.name)
        cookie = "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))
        names = [f"{self.name}-{i}" for i in range(1, self.size + 1)]
        peers = [f"rabbit@{n}" for n in names]
        return [
            DockerRabbitNode(n, self.options, network=self._network, cookie=cookie, cluster_nodes=peers) for n in names
        ]

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
            seen = self.running_nodes(via=members[0])
            return seen == want

        poll(
            formed,
            timeout,
            FORMATION_POLL_INTERVAL,
            f"cluster {self.name} formation ({len(want)} nodes)",
            on_timeout=lambda: f"wanted {want}, last saw {seen}\n{members[0]._log_excerpt()}",
        )

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
                from .docker import remove_network

                remove_network(self._network)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
        if errors:
            raise NodeError(f"cluster {self.name}: {len(errors)} node(s) failed to close: {errors}")

    def __enter__(self) -> RabbitCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RabbitCluster {self.name} {self.driver} x{self.size}>"
