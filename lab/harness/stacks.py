"""Everything one chaos run starts, in one place, and stopped for sure.

A :class:`Stack` owns the broker under test (one node, a RabbitMQ cluster, or a Redis Sentinel
group: a primary, its replicas and three Sentinels, for a Redis setup of cluster_size > 1), an auxiliary Redis
node that is never killed (Celery results and the execution ledger), the ``celery worker``
processes and the API. ``close()`` stops all of it, newest first, whatever state the run is in;
it may be called any number of times.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.harness.nodes import BrokerNode, DriverName, RabbitCluster, make_node
from lab.harness.nodes.sentinel import SentinelGroup
from lab.harness.processes import ApiServer, CeleryWorker, ManagedProcess
from lab.harness.settings import settings_for
from lab.harness.setups import Setup
from worker.settings import Settings, load_settings
from worker.topology import WORK_QUEUES

log = logging.getLogger(__name__)

#: kombu's Redis transport: a queue's list for priority p > 0 is "<queue><SEP><p>", and delivered
#: but unacknowledged messages wait in these two keys.
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_UNACKED_KEY = "unacked"
REDIS_UNACKED_INDEX_KEY = "unacked_index"


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
        if self.use_cluster and setup.broker == "redis":
            self.sentinel = SentinelGroup(
                setup.cluster_size,
                self.driver,
                setup.redis,
                min_replicas_to_write=setup.min_replicas_to_write,
                min_replicas_max_lag=setup.min_replicas_max_lag,
            )
            self._resources.append(("sentinel group", self.sentinel))
            if aux:
                self._start_aux()
            self.sentinel.start()
        elif self.use_cluster:
            self.cluster = RabbitCluster(setup.cluster_size, self.driver, rabbit=setup.rabbit)
            for member in self.cluster.nodes:
                self._prepare_node(member)
            self._resources.append(("cluster", self.cluster))
            if aux:
                self._start_aux()
            self.cluster.start()
        else:
            options: dict[str, Any] = {"redis": setup.redis} if setup.broker == "redis" else {"rabbit": setup.rabbit}
            self.broker = make_node(setup.broker, self.driver, **options)
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
        self.aux = make_node("redis", self.driver)
        self._resources.append(("aux", self.aux))
        self.aux.start()

    @property
    def broker_nodes(self) -> list[BrokerNode]:
        if self.cluster is not None:
            return list(self.cluster.nodes)
        if self.sentinel is not None:
            return list(self.sentinel.nodes)
        return [self.broker] if self.broker is not None else []

    @property
    def broker_url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        if self.sentinel is not None:
            return self.sentinel.url
        assert self.broker is not None
        return self.broker.url

    def make_settings(self, **overrides: Any) -> Settings:
        """Settings for the stack: the setup's own, then the run's ``overrides``."""
        assert self.aux is not None, "start_nodes() first"
        values = {**self.setup.settings, **overrides}
        if self.cluster is not None:
            self.settings = load_settings(
                environment="test",
                broker_profile="rabbitmq",
                rabbitmq_url=self.cluster.url,
                redis_url=self.aux.url,
                **values,
            )
        elif self.sentinel is not None:
            # The app finds the primary through the sentinels, as a deployment does.
            self.settings = load_settings(
                environment="test",
                broker_profile="redis",
                redis_url=self.sentinel.url,
                redis_sentinel_master=self.sentinel.master,
                result_backend_url=self.aux.url,
                **values,
            )
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
        if self.sentinel is not None:
            return redis_pending(self.sentinel.primary_url)
        if self.setup.broker == "redis":
            return redis_pending(self.broker_url)
        return sum(self.rabbit_queue_depths().get(q, 0) for q in WORK_QUEUES)

    def rabbit_queue_depths(self) -> dict[str, int]:
        node = self.running_broker_node()
        vhost = self.setup.rabbit.vhost if self.setup.rabbit else "/"
        out = node.rabbitmqctl("list_queues", "-q", "-p", vhost, "--formatter", "json", "name", "messages")
        return {row["name"]: int(row.get("messages") or 0) for row in json.loads(out or "[]")}

    def queue_leader(self, queue: str, via: Any = None) -> str | None:
        """Erlang node name of a quorum queue's leader, as a running member (or ``via``) reports it."""
        node = via if via is not None else self.running_broker_node()
        vhost = self.setup.rabbit.vhost if self.setup.rabbit else "/"
        out = node.rabbitmqctl("list_queues", "-q", "-p", vhost, "--formatter", "json", "name", "leader")
        for row in json.loads(out or "[]"):
            if row.get("name") == queue:
                return row.get("leader") or None
        return None

    def redis_aof(self) -> bytes | None:
        """The Redis broker's append-only files, concatenated (None without AOF). Read while the
        node still exists: it tells which task ids Redis ever stored."""
        setup = self.setup
        if setup.broker != "redis" or setup.redis is None or not setup.redis.appendonly or self.broker is None:
            return None
        node: Any = self.broker
        if node.driver == "process":
            files = sorted(p for p in node.data_dir.rglob("*") if p.is_file() and "appendonly" in p.name)
            return b"".join(p.read_bytes() for p in files)
        import io
        import tarfile

        import docker

        client = docker.from_env(timeout=60)
        try:
            stream, _ = client.containers.get(node.name).get_archive("/data")
            archive = io.BytesIO(b"".join(stream))
        finally:
            client.close()
        parts = []
        with tarfile.open(fileobj=archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and "appendonly" in member.name.rsplit("/", 1)[-1]:
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        parts.append(extracted.read())
        return b"".join(parts)

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


def redis_pending(url: str) -> int:
    import redis

    from worker.brokers.redis import PRIORITY_STEPS

    keys = [q if p == 0 else f"{q}{REDIS_PRIORITY_SEP}{p}" for q in WORK_QUEUES for p in PRIORITY_STEPS]
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        pipe.hlen(REDIS_UNACKED_KEY)
        return sum(int(n) for n in pipe.execute())
    finally:
        client.close()
