"""Broker nodes for tests, chaos runs and benchmarks.

    from lab.harness.nodes import make_node, RedisOptions

    with make_node("redis", redis=RedisOptions(appendonly=True, appendfsync="always")) as node:
        ...            # node.url, node.kill(), node.start(), node.wait_ready(), node.resource_usage()

Two drivers run the same brokers: "docker" (official images, via
testcontainers) and "process" (the distribution's redis-server /
rabbitmq-server).  The drivers' generic lifecycle is here (docker.py,
process.py); each broker's node classes and everything else the lab knows
about it are in lab.harness.vendors.<broker>.  make_node(driver=None) reads BROKERSTACK_TEST_DRIVER
(auto|docker|process, default auto = docker if an engine answers).

Guarantees every node keeps: it listens on 127.0.0.1 only, on a host port
chosen once and kept across stop/kill/start; kill() is SIGKILL of the whole
broker process tree and returns once it is dead; close() leaves no process,
container, volume or directory behind.  remove_stale_nodes() cleans up after
a crashed run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    BrokerKind,
    BrokerNode,
    DriverName,
    NodeError,
    NodeTimeout,
    RabbitOptions,
    RedisOptions,
    moved_names,
)
from .factory import DRIVER_ENV, docker_available, make_node, resolve_driver
from .ports import free_port
from .process import process_available, remove_stale_process_nodes
from .tls import TLSFiles, make_test_certs

if TYPE_CHECKING:
    from lab.harness.vendors.rabbitmq.cluster import RabbitCluster
    from lab.harness.vendors.redis.nodes import (
        ProcessRedisNode,
        ProcessSentinelGroup,
        ProcessSentinelNode,
        make_tls_redis_node,
    )

#: Names that live in their vendor's package (lab.harness.vendors.<broker>), still importable
#: from here; loaded on first use, as the vendors import this package's drivers.
_FROM_VENDORS = {
    "ProcessRedisNode": "lab.harness.vendors.redis.nodes",
    "ProcessSentinelGroup": "lab.harness.vendors.redis.nodes",
    "ProcessSentinelNode": "lab.harness.vendors.redis.nodes",
    "make_tls_redis_node": "lab.harness.vendors.redis.nodes",
    "RabbitCluster": "lab.harness.vendors.rabbitmq.cluster",
}

__getattr__ = moved_names(__name__, _FROM_VENDORS)


def remove_stale_containers(everything: bool = False) -> list[str]:
    """Remove lab containers/networks whose creating process is gone
    (everything=True: all lab containers).  No-op without a Docker engine."""
    from .docker import remove_stale_containers as remove

    return remove(everything)


def remove_stale_nodes() -> list[str]:
    """Leftovers of crashed runs, both drivers: returns what was removed."""
    return remove_stale_process_nodes() + remove_stale_containers()


__all__ = [
    "DRIVER_ENV",
    "BrokerKind",
    "BrokerNode",
    "DriverName",
    "NodeError",
    "NodeTimeout",
    "ProcessRedisNode",
    "ProcessSentinelGroup",
    "ProcessSentinelNode",
    "RabbitCluster",
    "RabbitOptions",
    "RedisOptions",
    "TLSFiles",
    "docker_available",
    "free_port",
    "make_node",
    "make_test_certs",
    "make_tls_redis_node",
    "process_available",
    "remove_stale_containers",
    "remove_stale_nodes",
    "remove_stale_process_nodes",
    "resolve_driver",
]
