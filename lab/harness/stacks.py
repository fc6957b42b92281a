"""Everything one chaos run starts, in one place, and stopped for sure.

A :class:`Stack` owns the broker under test (one node, a RabbitMQ cluster, or a Redis Sentinel
group: a primary, its replicas and three Sentinels, for a Redis setup of cluster_size > 1), an auxiliary Redis
node that is never killed (Celery results and the execution ledger), the ``celery worker``
processes and the API. ``close()`` stops all of it, newest first, whatever state the run is in;
it may be called any number of times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.harness.nodes import BrokerKind, BrokerNode, DriverName, make_node
from lab.harness.processes import ApiServer, CeleryWorker, ManagedProcess
from lab.harness.settings import settings_for
from lab.harness.setups import Setup
from lab.harness.vendors import vendor_for
from lab.harness.vendors.base import LabVendor
from lab.harness.vendors.rabbitmq.vendor import queue_depths, queue_leader
from lab.harness.vendors.redis.vendor import (  # noqa: F401 - kept importable from here (bench)
    REDIS_PRIORITY_SEP,
    REDIS_UNACKED_INDEX_KEY,
    REDIS_UNACKED_KEY,
)
from worker.settings import Settings, load_settings
from worker.topology import WORK_QUEUES

if TYPE_CHECKING:
    from lab.harness.vendors.rabbitmq.cluster import RabbitCluster
    from lab.harness.vendors.redis.sentinel import SentinelGroup

log = logging.getLogger(__name__)

#: The broker that keeps Celery's results and the execution ledger beside the broker under test
#: (brokerstack's result backend is Redis on every broker profile).
RESULTS_BROKER: BrokerKind = "redis"


class Stack:
    def __init__(self, setup: Setup, driver: DriverName, workdir: Path, *, cluster: bool = False) -> None:
        self.setup = setup
        self.driver = driver
        self.workdir = workdir
        self.log_dir = workdir / "logs"
        self.use_cluster = cluster
        self.broker: BrokerNode | None = None
        self.cluster: RabbitCluster | None = None
        self.sentinel: SentinelGroup | None = None
        self.aux: BrokerNode | None = None
        self.settings: Settings | None = None
        self.workers: list[CeleryWorker] = []
        self.retired_workers: list[CeleryWorker] = []
        self.api: ApiServer | None = None
        self._resources: list[tuple[str, Any]] = []
        self._closed = False
        self._worker_seq = 0
        #: Called with every broker node before its first start (power-loss puts the node's data
        #: on a LazyFS mount); what it returns is closed right after that node.
        self.prepare_node: Callable[[BrokerNode], Any] | None = None

    # --- starting --------------------------------------------------------------------------------

    def start_nodes(self, *, aux: bool = True) -> None:
        """Start the broker (or cluster) and, if asked, the auxiliary Redis; wait until ready."""
        setup = self.setup
        if self.use_cluster:
            attribute, group = self.vendor.make_group(setup, self.driver)
            setattr(self, attribute, group)
            for member in group.nodes:
                self._prepare_node(member)
            self._resources.append((attribute, group))
            if aux:
                self._start_aux()
            group.start()
        else:
            self.broker = make_node(setup.broker, self.driver, options=setup.node_options)
            self._prepare_node(self.broker)
            self._resources.append(("broker", self.broker))
            # Boot both at once (a container start returns before the broker is ready).
            self.broker.start()
            if aux:
                self._start_aux()
            self.broker.wait_ready()
        if self.aux is not None:
            self.aux.wait_ready()

    def _prepare_node(self, node: BrokerNode) -> None:
        if self.prepare_node is not None:
            resource = self.prepare_node(node)
            if resource is not None:
                self._resources.append(("broker data", resource))

    def _start_aux(self) -> None:
        self.aux = make_node(RESULTS_BROKER, self.driver)
        self._resources.append(("aux", self.aux))
        self.aux.start()

    @property
    def vendor(self) -> LabVendor:
        """What the lab knows about the setup's broker."""
        return vendor_for(self.setup.broker)

    @property
    def group(self) -> Any:
        """The multi-node group (a RabbitCluster or a SentinelGroup), or None."""
        return self.cluster if self.cluster is not None else self.sentinel

    @property
    def broker_nodes(self) -> list[BrokerNode]:
        if self.cluster is not None:
            return list(self.cluster.nodes)
        if self.sentinel is not None:
            return list(self.sentinel.nodes)
        return [self.broker] if self.broker is not None else []

    @property
    def broker_url(self) -> str:
        if self.group is not None:
            return str(self.group.url)
        assert self.broker is not None
        return self.broker.url

    @property
    def primary_url(self) -> str:
        """The URL of the node that takes writes now (a Sentinel group's current primary), for
        reading the broker's state directly."""
        if self.sentinel is not None:
            return self.sentinel.primary_url
        return self.broker_url

    def make_settings(self, **overrides: Any) -> Settings:
        """Settings for the stack: the setup's own, then the run's ``overrides``."""
        assert self.aux is not None, "start_nodes() first"
        values = {**self.setup.settings, **overrides}
        if self.group is not None:
            urls = self.vendor.group_settings(self.group, self.aux.url)
            self.settings = load_settings(environment="test", **urls, **values)
        else:
            assert self.broker is not None
            self.settings = settings_for(self.broker, self.aux, **values)
        return self.settings

    def start_workers(self, count: int, *, pool: str = "solo", concurrency: int = 1) -> list[CeleryWorker]:
        new = [self._new_worker(pool, concurrency) for _ in range(count)]
        for worker in new:
            worker.start()
        for worker in new:
            worker.wait_ready(timeout=120)
        return new

    def _new_worker(self, pool: str, concurrency: int) -> CeleryWorker:
        assert self.settings is not None, "make_settings() first"
        self._worker_seq += 1
        worker = CeleryWorker(
            self.settings.to_env(),
            queues=WORK_QUEUES,
            pool=pool,
            concurrency=concurrency,
            name=f"chaos-w{self._worker_seq}",
            log_dir=self.log_dir,
        )
        self.workers.append(worker)
        self._resources.append(("worker", worker))
        return worker

    def replace_worker(self, dead: CeleryWorker, *, wait: bool = True) -> CeleryWorker:
        """Retire ``dead`` (already killed) and start a fresh worker like it."""
        self.workers.remove(dead)
        self.retired_workers.append(dead)
        pool = dead.argv[dead.argv.index("--pool") + 1]
        concurrency = int(dead.argv[dead.argv.index("--concurrency") + 1])
        worker = self._new_worker(pool, concurrency)
        worker.start()
        if wait:
            worker.wait_ready(timeout=120)
        return worker

    def start_api(self) -> ApiServer:
        assert self.settings is not None, "make_settings() first"
        self.api = ApiServer(self.settings.to_env(), log_dir=self.log_dir)
        self._resources.append(("api", self.api))
        self.api.start()
        self.api.wait_ready(timeout=60)
        return self.api

    # --- looking at the broker ------------------------------------------------------------------

    def pending_messages(self) -> int:
        """Messages the broker still holds in the work queues, delivered-but-unacked included."""
        return self.vendor.pending_messages(self)

    def dead_lettered(self) -> int | None:
        """Messages in the broker's native dead-letter queue (None: it has none)."""
        return self.vendor.dead_lettered(self)

    def rabbit_queue_depths(self) -> dict[str, int]:
        vhost = self.setup.options.vhost
        return queue_depths(self.running_broker_node(), vhost)

    def queue_leader(self, queue: str, via: Any = None) -> str | None:
        """Erlang node name of a quorum queue's leader, as a running member (or ``via``) reports it."""
        node = via if via is not None else self.running_broker_node()
        return queue_leader(node, queue, self.setup.options.vhost)

    def persisted_log(self) -> bytes | None:
        """The broker's append-only log (Redis' AOF), None when it keeps none. Read while the
        node still exists: it tells which task ids the broker ever stored."""
        return self.vendor.persisted_log(self)

    def running_broker_node(self) -> Any:
        for node in self.broker_nodes:
            if node.is_running():
                return node
        raise RuntimeError("no broker node is running")

    # --- stopping --------------------------------------------------------------------------------

    def close(self, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Stop everything this stack started, newest first; idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._resources:
            what, resource = self._resources.pop()
            try:
                if isinstance(resource, ManagedProcess):
                    resource.stop(timeout=10)
                else:
                    resource.close()
            except BaseException as exc:  # noqa: BLE001 - close the rest, then report
                log.warning("closing %s failed: %r", what, exc)
                if on_error is not None:
                    on_error(what, exc)

    @property
    def closed(self) -> bool:
        return self._closed

    def started(self) -> list[tuple[str, Any]]:
        """Everything started so far and not yet closed (for tests of the cleanup)."""
        return list(self._resources)
