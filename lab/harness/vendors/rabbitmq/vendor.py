"""RabbitMQ as the lab sees it: its nodes and clusters, the settings that point a stack at it,
how its queues, memory and message counters are read (rabbitmqctl, the management API), and
what a raw publisher sets for publisher confirms."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from lab.harness.nodes.base import BrokerNode, DriverName, RabbitOptions
from lab.harness.nodes.lazyfs import RABBITMQ_CONFIG
from lab.harness.vendors.base import MEMORY_SETTLE_TIMEOUT, LabVendor
from lab.harness.vendors.rabbitmq.nodes import (
    DockerRabbitNode,
    ProcessRabbitNode,
    find_epmd,
    find_rabbitmq_server,
)
from worker.topology import DEAD_LETTER_QUEUE, WORK_QUEUES

if TYPE_CHECKING:
    from lab.harness.stacks import Stack

#: RabbitMQ publishes queue statistics on an interval (collect_statistics_interval, 500 ms on the
#: nodes MEMORY_NODE_OPTIONS makes): a reading is taken once two reads this far apart agree.
MEMORY_SETTLE_INTERVAL = 1.0
#: Message counters reach the management API in batches (about every 5 s whatever
#: collect_statistics_interval says): how often and how long they are read until a phase is in.
COUNTERS_SETTLE_INTERVAL = 0.5
COUNTERS_SETTLE_TIMEOUT = 30.0
#: Message counters worth showing per task (management API ``message_stats`` keys).
RABBIT_COUNTERS = ("publish", "confirm", "deliver", "deliver_no_ack", "get", "get_empty", "ack", "redeliver")


def queue_depths(node: Any, vhost: str = "/") -> dict[str, int]:
    """Messages per queue (ready and unacknowledged) as a running node's rabbitmqctl reports them."""
    out = node.rabbitmqctl("list_queues", "-q", "-p", vhost, "--formatter", "json", "name", "messages")
    return {row["name"]: int(row.get("messages") or 0) for row in json.loads(out or "[]")}


def queue_leader(node: Any, queue: str, vhost: str = "/") -> str | None:
    """Erlang node name of a quorum queue's leader, as ``node`` (a running member) reports it."""
    out = node.rabbitmqctl("list_queues", "-q", "-p", vhost, "--formatter", "json", "name", "leader")
    for row in json.loads(out or "[]"):
        if row.get("name") == queue:
            return row.get("leader") or None
    return None


def _management(node: BrokerNode, what: str) -> tuple[str, RabbitOptions]:
    url = node.management_url
    if url is None:
        raise ValueError(f"{what} needs the management plugin on the node: RabbitOptions(management=True)")
    options: RabbitOptions = node.options  # type: ignore[attr-defined]
    return url, options


def rabbit_memory(node: BrokerNode, queue: str, messages: int) -> dict[str, float]:
    """The queue's ``memory`` and ``message_bytes`` and the node's ``mem_used``, once the queue's
    statistics (published every 0.5 s on MEMORY_NODE_OPTIONS' nodes) count the ``messages`` it
    holds and agree on two reads in a row (the statistics lag: two stale reads agree too)."""
    import httpx

    url, options = _management(node, "reading queue memory")
    auth = (options.user, options.password)

    def read() -> dict[str, float]:
        q = httpx.get(
            f"{url}/api/queues/{quote(options.vhost, safe='')}/{quote(queue, safe='')}", auth=auth, timeout=10
        )
        q.raise_for_status()
        nodes = httpx.get(f"{url}/api/nodes", auth=auth, timeout=10)
        nodes.raise_for_status()
        data = q.json()
        return {
            "messages": float(data.get("messages") or 0),
            "queue_memory": float(data.get("memory") or 0),
            "message_bytes": float(data.get("message_bytes") or 0),
            "node_mem_used": float(sum(n.get("mem_used") or 0 for n in nodes.json())),
        }

    deadline = time.monotonic() + MEMORY_SETTLE_TIMEOUT
    last = read()
    while time.monotonic() < deadline:
        time.sleep(MEMORY_SETTLE_INTERVAL)  # statistics arrive on an interval: nothing to poll sooner
        now = read()
        # The node's total moves with everything the VM does; the queue's own figures are the test.
        current = now["messages"] == messages
        if current and all(now[k] == last[k] for k in ("messages", "queue_memory", "message_bytes")):
            return {**now, "settled": 1.0}
        last = now
    return {**last, "settled": 0.0}


def rabbit_counters(node: BrokerNode, at_least: dict[str, int] | None = None) -> dict[str, int]:
    """RabbitMQ's cumulative message counters, read once the counter that ends a phase
    (``at_least``) is in."""
    import httpx

    url, options = _management(node, "counting")

    def read() -> dict[str, int]:
        response = httpx.get(f"{url}/api/overview", auth=(options.user, options.password), timeout=10)
        response.raise_for_status()
        stats = response.json().get("message_stats") or {}
        return {key: int(stats.get(key, 0)) for key in RABBIT_COUNTERS}

    deadline = time.monotonic() + COUNTERS_SETTLE_TIMEOUT
    while True:
        now = read()
        if all(now[key] >= value for key, value in (at_least or {}).items()):
            return now
        if time.monotonic() > deadline:
            raise TimeoutError(f"RabbitMQ's counters {now} did not reach {at_least} in {COUNTERS_SETTLE_TIMEOUT:g} s")
        time.sleep(COUNTERS_SETTLE_INTERVAL)


class RabbitMQVendor(LabVendor):
    name = "rabbitmq"
    options_type = RabbitOptions
    options_field = "rabbit"
    # The memory alarm counts the node's memory, of which a queue's is the share that grows with
    # its messages.
    memory_headline = "queue_memory"
    #: Failed AMQP handshakes are not free: probe a booting node less often than Redis.
    poll_interval = 0.2
    process_names = ("beam.smp",)
    server_binary = "rabbitmq-server"
    recovery_seconds = 12.0
    #: A node replays its logs before it serves again.
    power_cut_period = 15.0
    #: A killed worker's channel closes and its unacked messages are requeued at once.
    requeue_seconds = 1.0
    ignored_run_parameters: ClassVar[tuple[str, ...]] = (
        "visibility_timeout",
        "restore_interval",
        "restore_throttle",
        "transport",
    )
    memory_node_options: ClassVar[dict[str, Any]] = {
        "rabbit": RabbitOptions(management=True, extra_config="collect_statistics_interval = 500")
    }
    counters_node_options: ClassVar[dict[str, Any]] = {"rabbit": RabbitOptions(management=True)}

    def make_node(
        self, driver: DriverName, options: Any = None, *, name: str | None = None, base_dir: str | Path | None = None
    ) -> BrokerNode:
        if options is not None and not isinstance(options, RabbitOptions):
            raise ValueError(f"{type(options).__name__} given for a rabbitmq node")
        if driver == "docker":
            return DockerRabbitNode(name, options)
        return ProcessRabbitNode(name, options, base_dir=base_dir)

    def process_available(self) -> bool:
        return find_rabbitmq_server() is not None and find_epmd() is not None

    def make_group(self, setup: Any, driver: DriverName) -> tuple[str, Any]:
        """A RabbitMQ cluster of cluster_size nodes."""
        from lab.harness.vendors.rabbitmq.cluster import RabbitCluster

        return "cluster", RabbitCluster(setup.cluster_size, driver, rabbit=setup.options)

    def settings_urls(self, broker_url: str, results_url: str | None) -> dict[str, Any]:
        if results_url is None:
            raise ValueError("the rabbitmq profile keeps results in Redis: pass a Redis node as results")
        return {"broker_profile": self.name, "rabbitmq_url": broker_url, "redis_url": results_url}

    def pending_messages(self, stack: Stack) -> int:
        depths = stack.rabbit_queue_depths()
        return sum(depths.get(q, 0) for q in WORK_QUEUES)

    def dead_lettered(self, stack: Stack) -> int | None:
        return stack.rabbit_queue_depths().get(DEAD_LETTER_QUEUE, 0)

    def delayed_held(self, stack: Stack) -> int | None:
        # A passive declare, the profile's count, sees a ladder queue's ready messages only, not the
        # dead letters a quorum ladder queue holds unforwarded (rabbitmq-server#12625: in its total
        # only). Total minus ready minus unacked, from one rabbitmqctl snapshot: quorum queues
        # publish these figures on a timer, so they lag, but the three lag together.
        from worker.brokers.rabbitmq.delayed import LADDER_QUEUES

        columns = ("messages", "messages_ready", "messages_unacknowledged")
        out = stack.running_broker_node().rabbitmqctl(
            "list_queues", "-q", "-p", stack.setup.options.vhost, "--formatter", "json", "name", *columns
        )
        rows = {row["name"]: row for row in json.loads(out or "[]")}
        total, ready, unacked = (sum(int(rows[q].get(c) or 0) for q in LADDER_QUEUES if q in rows) for c in columns)
        return max(0, total - ready - unacked)

    def publish_options(self, setup_settings: Any) -> dict[str, Any]:
        return {"confirm_publish": self.confirms_publishes(setup_settings)}

    def confirms_publishes(self, setup_settings: Any) -> bool | None:
        return bool(setup_settings.get("rabbitmq_confirm_publish", True))

    def memory(self, node: BrokerNode, queue: str, messages: int) -> dict[str, float]:
        return rabbit_memory(node, queue, messages)

    def counters(self, node: BrokerNode, at_least: dict[str, int]) -> dict[str, int]:
        return rabbit_counters(node, at_least)

    def queue_type(self, settings: Any) -> str | None:
        return str(settings.rabbitmq_queue_type)

    def priority_variants(self) -> tuple[dict[str, Any], ...]:
        return ({"rabbitmq_queue_type": "classic"}, {"rabbitmq_queue_type": "quorum"})

    def prepare_for_lazyfs(self, node: Any) -> None:
        options = node.options
        extra = "\n".join(part for part in (options.extra_config.strip(), RABBITMQ_CONFIG) if part)
        node.options = replace(options, extra_config=extra)

    def after_wipe(self, node: Any) -> None:
        if node.driver == "process":
            # The process node keeps its Mnesia base in its data directory (vendors/rabbitmq/nodes.py).
            mnesia = Path(node.data_mount) / "mnesia"
            mnesia.mkdir(mode=0o777)
            mnesia.chmod(0o777)


VENDOR = RabbitMQVendor()
