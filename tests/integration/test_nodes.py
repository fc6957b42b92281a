"""lab.harness.nodes against real brokers: kill -9 keeps what was made durable, the
port survives restarts, and close() leaves nothing behind."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Queue

from lab.harness.nodes import (
    BrokerNode,
    NodeError,
    RabbitOptions,
    RedisOptions,
    docker_available,
    make_node,
    process_available,
    proctree,
    remove_stale_containers,
)
from lab.harness.nodes.base import poll
from lab.harness.nodes.ports import port_accepts
from lab.harness.vendors.rabbitmq.cluster import RabbitCluster

pytestmark = pytest.mark.integration

KINDS = ["redis", "rabbitmq"]
DRIVERS = ["docker", "process"]

#: The vhost of the rabbit tests: not "/" so URL quoting is exercised too.
VHOST = "brokerstack"


def require(kind: str, driver: str) -> None:
    if driver == "docker" and not docker_available():
        pytest.skip("no Docker engine answers")
    if driver == "process" and not process_available(kind):
        pytest.skip(f"{kind} is not installed on this machine")


def durable_node(kind: str, driver: str) -> BrokerNode:
    if kind == "redis":
        return make_node("redis", driver, redis=RedisOptions(appendonly=True, appendfsync="always"))  # type: ignore[arg-type]
    return make_node("rabbitmq", driver, rabbit=RabbitOptions(vhost=VHOST))  # type: ignore[arg-type]


def owned_pids(node: Any) -> list[int]:
    """Every live process that belongs to node (epmd included)."""
    if node.driver == "process":
        return proctree.pids_with_cwd_under(str(node.dir))
    root = node._root_pid()
    return proctree.process_tree(root) if root else []


def volumes_of(node: Any) -> list[str]:
    if node.driver != "docker":
        return []
    node._container.reload()
    return [m["Name"] for m in node._container.attrs["Mounts"] if m.get("Type") == "volume"]


def assert_gone(node: Any, pids: list[int], volumes: list[str]) -> None:
    assert not [pid for pid in pids if proctree.pid_alive(pid)], "processes survived close()"
    if node.driver == "process":
        assert not node.dir.exists(), "node dir survived close()"
        if node.kind == "rabbitmq":
            assert not port_accepts(node.epmd.port), "private epmd survived close()"
    else:
        import docker

        client = docker.from_env()
        try:
            assert not client.containers.list(all=True, filters={"name": node.name}), "container survived close()"
            left = [v.name for v in client.volumes.list() if v.name in volumes]
            assert not left, f"volumes survived close(): {left}"
        finally:
            client.close()
    assert not port_accepts(node.port), "broker port still open after close()"


# -- writing and reading durable data ----------------------------------------

QUEUE = Queue("bs-nodes-durable", routing_key="bs-nodes-durable", durable=True)
PAYLOAD = {"task": "survives kill -9"}


def write_durable(node: BrokerNode) -> None:
    if node.kind == "redis":
        client = redis.Redis.from_url(node.url)
        try:
            client.set("bs-nodes-key", "survives kill -9")
        finally:
            client.close()
        return
    # Publisher confirms: publish() returns once the broker has the message
    # on disk (persistent message, durable queue).
    with Connection(node.url, transport_options={"confirm_publish": True}) as conn:
        conn.Producer().publish(
            PAYLOAD, routing_key=QUEUE.routing_key, declare=[QUEUE], delivery_mode=2, serializer="json"
        )
    # A confirm covers the message, not the queue's own record: RabbitMQ writes a new durable queue's
    # metadata to its Mnesia log a moment later, and a kill -9 in between loses the queue (seen once
    # in CI on a loaded machine). Flush the log so the test kills a node that has both on disk.
    node.rabbitmqctl("eval", "mnesia:sync_log().")  # type: ignore[attr-defined]


def read_durable(node: BrokerNode) -> Any:
    if node.kind == "redis":
        client = redis.Redis.from_url(node.url)
        try:
            return client.get("bs-nodes-key")
        finally:
            client.close()
    with Connection(node.url) as conn:
        message = QUEUE(conn.default_channel).get(no_ack=True)
        return None if message is None else message.payload


EXPECTED = {"redis": b"survives kill -9", "rabbitmq": PAYLOAD}


@pytest.fixture
def timings(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    """Collected per test and shown with -s / in the report section."""
    values: dict[str, float] = {}
    yield values
    if values:
        text = ", ".join(f"{k}={v:.2f}s" for k, v in values.items())
        request.node.add_report_section("call", "timings", text)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", KINDS)
def test_kill_keeps_durable_data_and_close_cleans_up(kind: str, driver: str, timings: dict[str, float]) -> None:
    require(kind, driver)
    node = durable_node(kind, driver)
    pids: list[int] = []
    volumes: list[str] = []
    try:
        started = time.monotonic()
        node.start()
        timings["start"] = time.monotonic() - started
        node.wait_ready()
        timings["start_to_ready"] = time.monotonic() - started
        port = node.port
        assert node.is_running()
        assert node.version().startswith(kind)
        pid = node.pid()
        assert pid is not None and proctree.pid_alive(pid)
        usage = node.resource_usage()
        assert usage["rss_bytes"] > 1_000_000 and usage["cpu_seconds"] >= 0

        write_durable(node)
        before_kill = owned_pids(node)
        root = node._root_pid()
        assert root is not None
        broker_pids = proctree.process_tree(root)

        killed = time.monotonic()
        node.kill()
        timings["kill"] = time.monotonic() - killed
        assert not node.is_running()
        assert node.pid() is None
        assert not [pid for pid in broker_pids if proctree.pid_alive(pid)], "broker tree survived kill()"
        if driver == "process" and kind == "rabbitmq":
            # epmd is the group's, not the broker's: it lives until close().
            assert [pid for pid in before_kill if proctree.pid_alive(pid)], "epmd died with the broker"

        restarted = time.monotonic()
        node.start()
        node.wait_ready()
        timings["restart_to_ready"] = time.monotonic() - restarted
        assert node.port == port
        assert read_durable(node) == EXPECTED[kind]
        pids = owned_pids(node)
        volumes = volumes_of(node)
        assert pids
        assert volumes or driver == "process"  # the images declare their data dir a volume
    finally:
        node.close()
    node.close()  # idempotent
    assert_gone(node, pids, volumes)


@pytest.mark.parametrize("driver", DRIVERS)
def test_redis_graceful_restart_keeps_everysec_data(driver: str) -> None:
    """A clean stop flushes the AOF even when fsync is only every second."""
    require("redis", driver)
    with make_node("redis", driver, redis=RedisOptions(appendonly=True, appendfsync="everysec")) as node:  # type: ignore[arg-type]
        client = redis.Redis.from_url(node.url)
        client.set("k", "v")
        client.close()
        node.restart(graceful=True)
        client = redis.Redis.from_url(node.url)
        try:
            assert client.get("k") == b"v"
        finally:
            client.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_redis_volatile_loses_data_on_kill(driver: str) -> None:
    """The redis-volatile preset really is volatile (no AOF, no RDB)."""
    require("redis", driver)
    with make_node("redis", driver, redis=RedisOptions()) as node:  # type: ignore[arg-type]
        client = redis.Redis.from_url(node.url)
        client.set("k", "v")
        client.close()
        node.restart(graceful=False)
        client = redis.Redis.from_url(node.url)
        try:
            assert client.get("k") is None
        finally:
            client.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_broken_rabbit_config_fails_fast_with_log_tail(driver: str) -> None:
    require("rabbitmq", driver)
    node = make_node("rabbitmq", driver, rabbit=RabbitOptions(extra_config="no_such_setting_anywhere = 1"))  # type: ignore[arg-type]
    try:
        node.start()
        started = time.monotonic()
        with pytest.raises(NodeError) as failure:
            node.wait_ready(timeout=60)
        # It exits on the bad key: reported at once, not at the deadline.
        assert time.monotonic() - started < 45
        assert "no_such_setting_anywhere" in str(failure.value)
    finally:
        node.close()


def test_remove_stale_containers_takes_only_orphans(monkeypatch: pytest.MonkeyPatch) -> None:
    require("redis", "docker")
    import lab.harness.nodes.docker as docker_driver

    live = make_node("redis", "docker")
    orphan = make_node("redis", "docker")
    try:
        live.start()  # labelled with this process as its owner
        # The orphan's label names a process of this host that is gone.
        dead = subprocess.Popen(["true"])
        dead.wait()
        monkeypatch.setattr(docker_driver, "owner_token", lambda: f"{socket.gethostname()}:{dead.pid}:1")
        orphan.start()
        removed = remove_stale_containers()
        assert orphan.name in removed
        assert live.name not in removed
        assert live.is_running() and not orphan.is_running()
    finally:
        live.close()
        orphan.close()


# -- cluster -----------------------------------------------------------------

QUORUM_QUEUE = Queue(
    "bs-nodes-quorum", routing_key="bs-nodes-quorum", durable=True, queue_arguments={"x-queue-type": "quorum"}
)


def test_process_cluster_survives_losing_a_node(timings: dict[str, float]) -> None:
    require("rabbitmq", "process")
    started = time.monotonic()
    cluster = RabbitCluster(3, driver="process")
    cluster_dir = cluster._dir
    pids: list[int] = []
    try:
        cluster.start()
        timings["formed"] = time.monotonic() - started
        assert cluster.running_nodes() == sorted(cluster.node_names)
        assert cluster.url == ";".join(cluster.urls) and len(cluster.urls) == 3

        first, second, _ = cluster.nodes
        with Connection(first.url, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(
                PAYLOAD,
                routing_key=QUORUM_QUEUE.routing_key,
                declare=[QUORUM_QUEUE],
                delivery_mode=2,
                serializer="json",
            )

        first.kill()  # the queue was declared there: most likely its leader
        assert not first.is_running()
        cluster.wait_formed(expected=cluster.nodes[1:])

        def message_from_survivor() -> Any:
            # Until a new leader is elected, basic.get fails or finds nothing.
            with Connection(second.url) as conn:
                message = QUORUM_QUEUE(conn.default_channel).get(no_ack=True)
                return None if message is None else message.payload

        assert poll(message_from_survivor, 30, 0.5, "quorum queue on the surviving nodes") == PAYLOAD

        first.start()
        first.wait_ready()
        cluster.wait_formed()
        timings["total"] = time.monotonic() - started
        pids = proctree.pids_with_cwd_under(str(cluster_dir))
    finally:
        cluster.close()
    assert not [pid for pid in pids if proctree.pid_alive(pid)]
    assert cluster_dir is not None and not cluster_dir.exists()
    assert not any(port_accepts(node.port) for node in cluster.nodes)
