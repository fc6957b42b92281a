"""Redis as the lab sees it: its nodes, the settings that point a stack at it, how its queues,
memory and command counters are read, and how soon it hands a dead worker's tasks out again."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.harness.nodes.base import BrokerNode, DriverName, RedisOptions
from lab.harness.vendors.base import MEMORY_SETTLE_TIMEOUT, LabVendor, RedeliveryOptions
from lab.harness.vendors.redis.nodes import (
    REDIS_CONTAINER_DATA_DIR,
    DockerRedisNode,
    ProcessRedisNode,
    find_redis_server,
)
from worker.topology import WORK_QUEUES

if TYPE_CHECKING:
    from lab.harness.stacks import Stack

#: kombu's Redis transport: a queue's list for priority p > 0 is "<queue><SEP><p>", and delivered
#: but unacknowledged messages wait in these two keys.
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_UNACKED_KEY = "unacked"
REDIS_UNACKED_INDEX_KEY = "unacked_index"
#: Two reads of ``used_memory`` this far apart must agree before it is believed: Redis frees
#: lazily, and there is nothing to wait on but time.
MEMORY_SETTLE_INTERVAL = 0.2
#: A chaos run's drain waits this long without progress beyond the redelivery delay.
DRAIN_SLACK = 30.0


def redis_pending(url: str) -> int:
    """Messages in the work queues' lists (every priority) plus the delivered-but-unacked ones."""
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


def redis_memory(url: str) -> dict[str, float]:
    """``used_memory`` and the exact ``MEMORY USAGE`` sum of every key, once ``used_memory`` has
    settled; ``settled`` is 0.0 when it never did within MEMORY_SETTLE_TIMEOUT."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        deadline = time.monotonic() + MEMORY_SETTLE_TIMEOUT
        last = int(client.info("memory")["used_memory"])
        settled = False
        while time.monotonic() < deadline:
            time.sleep(MEMORY_SETTLE_INTERVAL)  # the allocator's figure: nothing to wait on but time
            now = int(client.info("memory")["used_memory"])
            if now == last:
                settled = True
                break
            last = now
        keys = 0
        for key in client.scan_iter(count=1000):
            keys += int(client.memory_usage(key, samples=0) or 0)
        return {"used_memory": float(last), "keys_memory": float(keys), "settled": float(settled)}
    finally:
        client.close()


def redis_commands(url: str) -> dict[str, int]:
    """Calls per command since the server started (``INFO commandstats``)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=10)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def append_only_files(node: Any) -> bytes:
    """A Redis node's append-only files, concatenated (read while the node still exists)."""
    if node.driver == "process":
        files = sorted(p for p in node.data_dir.rglob("*") if p.is_file() and "appendonly" in p.name)
        return b"".join(p.read_bytes() for p in files)
    from lab.harness.nodes.docker import docker_client

    client = docker_client()
    try:
        stream, _ = client.containers.get(node.name).get_archive(REDIS_CONTAINER_DATA_DIR)
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


#: In Redis' log when it refuses its AOF after a crash ("Bad file format reading the append only
#: file ... use ./redis-check-aof --fix").
AOF_REFUSED = "redis-check-aof"
#: Lines of redis-check-aof's output kept in a chaos record.
AOF_REPAIR_LINES = 12


class RedisVendor(LabVendor):
    name = "redis"
    options_type = RedisOptions
    options_field = "redis"
    # maxmemory checks used_memory.
    memory_headline = "used_memory"
    #: Redis is ready within ~20 ms: probe often.
    poll_interval = 0.02
    process_names = ("redis-server",)
    server_binary = "redis-server"
    #: brokerstack's transport (atomic fetch-and-record) and kombu's stock one, measured beside it.
    transports = ("brokerstack", "kombu")
    #: kombu's stock transport takes a message off the queue and records it as unacked in two
    #: steps: a worker dying in between loses it whatever the setup.
    unpromised_transports = ("kombu",)
    recovery_seconds = 4.0

    def make_node(
        self, driver: DriverName, options: Any = None, *, name: str | None = None, base_dir: str | Path | None = None
    ) -> BrokerNode:
        if options is not None and not isinstance(options, RedisOptions):
            raise ValueError(f"{type(options).__name__} given for a redis node")
        if driver == "docker":
            return DockerRedisNode(name, options)
        return ProcessRedisNode(name, options, base_dir=base_dir)

    def process_available(self) -> bool:
        return find_redis_server() is not None

    def make_group(self, setup: Any, driver: DriverName) -> tuple[str, Any]:
        """A Sentinel group: a primary, its replicas and three Sentinels."""
        from lab.harness.vendors.redis.sentinel import SentinelGroup

        group = SentinelGroup(
            setup.cluster_size,
            driver,
            setup.options,
            min_replicas_to_write=setup.min_replicas_to_write,
            min_replicas_max_lag=setup.min_replicas_max_lag,
        )
        return "sentinel", group

    def describe_options(self, options: RedisOptions | None) -> dict[str, Any]:
        if options is None:
            return {"redis": None}
        return {
            "redis": {
                "appendonly": options.appendonly,
                "appendfsync": options.appendfsync if options.appendonly else None,
                "save_snapshots": options.save_snapshots,
            }
        }

    def settings_urls(self, broker_url: str, results_url: str | None) -> dict[str, Any]:
        urls: dict[str, Any] = {"broker_profile": self.name, "redis_url": broker_url}
        if results_url is not None:
            urls["result_backend_url"] = results_url
        return urls

    def group_settings(self, group: Any, results_url: str) -> dict[str, Any]:
        # The app finds the primary through the sentinels, as a deployment does.
        return {**self.settings_urls(group.url, results_url), "redis_sentinel_master": group.master}

    def run_settings(self, options: RedeliveryOptions, transport: str | None) -> dict[str, Any]:
        return {
            "redis_transport": transport,
            "redis_visibility_timeout": options.visibility_timeout,
            "redis_unacked_restore_interval": options.restore_interval,
            "redis_unacked_restore_throttle": options.restore_throttle,
        }

    def redelivery_delay(self, options: RedeliveryOptions) -> float:
        # A message stuck in the unacked hash comes back only after its visibility timeout, at
        # the next restore sweep that gets to it.
        return options.visibility_timeout + options.restore_interval * options.restore_throttle

    def drain_idle_limit(self, options: RedeliveryOptions) -> float:
        # A message stuck in the unacked hash comes back only after its visibility timeout.
        return self.redelivery_delay(options) + DRAIN_SLACK

    def unacked_redelivery_delay(self, options: RedeliveryOptions) -> float | None:
        return self.redelivery_delay(options)

    def pending_messages(self, stack: Stack) -> int:
        return redis_pending(stack.primary_url)

    def persisted_log(self, stack: Stack) -> bytes | None:
        setup = stack.setup
        if not setup.options.appendonly or stack.broker is None:
            return None
        return append_only_files(stack.broker)

    def memory(self, node: BrokerNode, queue: str, messages: int) -> dict[str, float]:
        return redis_memory(node.url)

    def counters(self, node: BrokerNode, at_least: dict[str, int]) -> dict[str, int]:
        return redis_commands(node.url)  # exact at once

    def queue_label(self, settings: Any) -> str:
        return "redis-lists"

    def repair_after_power_loss(self, node: BrokerNode, error: str) -> list[str] | None:
        if AOF_REFUSED not in error:
            return None
        return repair_aof(node).splitlines()[-AOF_REPAIR_LINES:]


def repair_aof(node: Any) -> str:
    """``redis-check-aof --fix`` on a stopped Redis node's AOF (answering its prompt with yes), on
    the host for a process node, in a throw-away container of the node's image for a docker one."""
    script = (
        f"cd {REDIS_CONTAINER_DATA_DIR}/appendonlydir 2>/dev/null || cd {REDIS_CONTAINER_DATA_DIR}; "
        "m=$(ls *.manifest 2>/dev/null | head -1); "
        'echo y | redis-check-aof --fix "${m:-appendonly.aof}" 2>&1'
    )
    mount = getattr(node, "data_mount", None)
    assert mount is not None
    if node.driver == "process":
        data = str(node.data_dir)
        done = subprocess.run(
            ["sh", "-c", script.replace(REDIS_CONTAINER_DATA_DIR, data)], capture_output=True, text=True, timeout=120
        )
        return done.stdout + done.stderr
    from lab.harness.nodes.docker import docker_client

    client = docker_client()
    try:
        out = client.containers.run(
            node.image,
            ["sh", "-c", script],
            volumes={str(mount): {"bind": REDIS_CONTAINER_DATA_DIR, "mode": "rw"}},
            remove=True,
            user="root",
        )
        return out.decode(errors="replace") if isinstance(out, bytes) else str(out)
    finally:
        client.close()


VENDOR = RedisVendor()
