"""The broker setups that chaos runs compare: named presets usable from the CLI and the tests.

A setup is what a user would deploy: which broker, how it persists, and the brokerstack settings
that change its delivery guarantees (publisher confirms, queue type). Each setup says which
scenarios apply to it and which of them it *promises* to survive without losing an acknowledged
task; the tests assert exactly those promises and only report the numbers of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from lab.harness.nodes import BrokerKind, RabbitOptions, RedisOptions
from lab.harness.vendors import VENDORS, vendor_for
from lab.harness.vendors.base import LabVendor

#: Every scenario name (defined in lab.experiments.chaos.scenarios), in the order tables show them.
SCENARIO_NAMES = (
    "broker-kill",
    "broker-restart",
    "worker-kill",
    "producer-outage",
    "publish-kill",
    "node-loss",
    "rolling-deploy",
    "broker-restart-mid-task",
    "idle-kill",
    "failover",
    "partition",
    "power-loss",
    "power-loss-node",
    "power-loss-all",
    "delayed",
)

#: Routine operations rather than crashes: a deploy, a broker maintenance restart, a worker that
#: dies while idle. Every setup of both brokers runs them.
ROUTINE = ("rolling-deploy", "broker-restart-mid-task", "idle-kill")
#: The routine operations that touch only workers (the broker keeps running).
_WORKER_ONLY = ("rolling-deploy", "idle-kill")

#: A machine crash (lab.experiments.chaos.scenarios.power_loss): the broker's data on LazyFS.
POWER_LOSS = "power-loss"
#: The same on the 3-node quorum cluster: one node's machine, or all three at once.
CLUSTER_POWER_LOSS = ("power-loss-node", "power-loss-all")

#: "delayed": delayed tasks held by the broker while it and the workers are killed (issue 14).
_SINGLE_NODE = (
    *("broker-kill", "broker-restart", "worker-kill", "producer-outage", "publish-kill", *ROUTINE, POWER_LOSS),
    "delayed",
)

#: High availability: the primary or queue leader is killed, or cut off from its peers (Sentinel
#: groups and RabbitMQ clusters, cluster_size nodes).
HA_SCENARIOS = ("failover", "partition")
#: RabbitMQ clusters: a node that sees itself in a minority stops serving (the recommended
#: setting for 3+ nodes), so a split never leaves two sides taking work.
PAUSE_MINORITY = "cluster_partition_handling = pause_minority"

GUARANTEE_NO_LOSS = "lost == 0"
GUARANTEE_EXACTLY_ONCE = "lost == 0, duplicated == 0"

#: Every transport some broker lets a run choose (REDIS_TRANSPORT), and the default one; which
#: apply to a broker is its vendor's ``transports`` (RabbitMQ setups have none to choose).
TRANSPORTS: tuple[str, ...] = tuple(dict.fromkeys(t for v in VENDORS.values() for t in v.transports))
DEFAULT_TRANSPORT = "brokerstack"


@dataclass(frozen=True)
class Setup:
    """One broker configuration under test."""

    name: str
    broker: BrokerKind
    description: str
    #: Scenarios this setup is run in.
    scenarios: tuple[str, ...]
    #: Scenarios in which the setup guarantees ``lost == 0``: every acknowledged task runs.
    promises_no_loss: frozenset[str]
    #: Why it promises what it promises (shown by ``brokerstack chaos list``).
    guarantee: str
    #: The broker's node options, of its vendor's ``options_type`` (RedisOptions, RabbitOptions).
    options: Any = None
    #: Settings fields (lower-case env names) that differ from brokerstack's defaults.
    settings: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Nodes of the cluster the ``node-loss`` scenario runs on (1: no cluster scenarios).
    cluster_size: int = 1
    #: Scenarios in which it also guarantees ``duplicated == 0``: no task runs twice.
    promises_no_duplicates: frozenset[str] = frozenset()
    #: Redis with cluster_size > 1 (a Sentinel group): every data node refuses writes unless this
    #: many replicas acknowledged replication within ``min_replicas_max_lag`` seconds
    #: (``min-replicas-to-write``; 0: off, Redis' default).
    min_replicas_to_write: int = 0
    min_replicas_max_lag: int = 10

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIO_NAMES)
        if unknown:
            raise ValueError(f"setup {self.name}: unknown scenarios {sorted(unknown)}")
        if not self.promises_no_loss <= set(self.scenarios):
            raise ValueError(f"setup {self.name}: promises for scenarios it does not run")
        if not self.promises_no_duplicates <= self.promises_no_loss:
            raise ValueError(f"setup {self.name}: promises duplicated == 0 where it does not promise lost == 0")
        expected = vendor_for(self.broker).options_type
        if not isinstance(self.options, expected):
            raise ValueError(f"setup {self.name}: give the node options of its broker ({expected.__name__})")
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    @property
    def vendor(self) -> LabVendor:
        """What the lab knows about this setup's broker (lab.harness.vendors)."""
        return vendor_for(self.broker)

    @property
    def node_options(self) -> Any:
        """The broker's node options (``options``, what ``make_node(options=...)`` takes)."""
        return self.options

    def applies_to(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def transport_for(self, transport: str | None) -> str | None:
        """The transport a run of this setup uses; None where the broker has no such choice."""
        return self.vendor.transport_for(transport)

    def promises(self, scenario: str, transport: str | None = None) -> bool:
        """True if this setup guarantees no acknowledged task is lost in ``scenario``.

        The Redis promises are brokerstack's transport's: kombu's stock transport takes a message
        off the queue and records it as unacked in two steps, so a worker dying in between loses it
        whatever the setup; it is run to be measured beside ours, not promised anything."""
        if self.transport_for(transport) in self.vendor.unpromised_transports:
            return False
        return scenario in self.promises_no_loss

    def promises_exactly_once(self, scenario: str, transport: str | None = None) -> bool:
        return self.promises(scenario, transport) and scenario in self.promises_no_duplicates

    def guarantee_for(self, scenario: str, transport: str | None = None) -> str | None:
        """The strongest promise for ``scenario``, as the records and tables name it."""
        if self.promises_exactly_once(scenario, transport):
            return GUARANTEE_EXACTLY_ONCE
        return GUARANTEE_NO_LOSS if self.promises(scenario, transport) else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "broker": self.broker,
            "description": self.description,
            "guarantee": self.guarantee,
            "scenarios": list(self.scenarios),
            "promises_no_loss": [s for s in SCENARIO_NAMES if s in self.promises_no_loss],
            "promises_no_duplicates": [s for s in SCENARIO_NAMES if s in self.promises_no_duplicates],
            "transports": list(self.vendor.transports),
            # Every broker's fields in every record (null where they do not apply), as records had.
            **{key: None for vendor in VENDORS.values() for key in vendor.describe_options(None)},
            **self.vendor.describe_options(self.options),
            "settings": {key.upper(): value for key, value in self.settings.items()},
            "cluster_size": self.cluster_size,
        }


def _settings(**values: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(values)


SETUPS: dict[str, Setup] = {
    setup.name: setup
    for setup in (
        Setup(
            name="redis-volatile",
            broker="redis",
            description="Redis without persistence (no AOF, no RDB snapshots)",
            options=RedisOptions(appendonly=False, save_snapshots=False),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill", *_WORKER_ONLY}),
            promises_no_duplicates=frozenset(_WORKER_ONLY),
            guarantee="none for the broker: a restart empties it; acks_late covers worker crashes only. A deploy "
            "or an idle worker's death leaves Redis untouched, and an ack is sent the moment the task finishes, "
            "so those lose and repeat nothing",
        ),
        Setup(
            name="redis-everysec",
            broker="redis",
            description="Redis, AOF with appendfsync everysec",
            options=RedisOptions(appendonly=True, appendfsync="everysec"),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill", "broker-restart", *ROUTINE}),
            promises_no_duplicates=frozenset(ROUTINE),
            guarantee="a clean shutdown writes everything to disk; a crash may lose the last second. Routine "
            "operations repeat nothing: acks leave as they are made, and a task running across a broker restart "
            "keeps its unacked record and is acked when it finishes (shorter than the visibility timeout)",
        ),
        Setup(
            name="redis-always",
            broker="redis",
            description="Redis, AOF with appendfsync always (fsync before every reply)",
            options=RedisOptions(appendonly=True, appendfsync="always"),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset(_SINGLE_NODE),
            promises_no_duplicates=frozenset(ROUTINE),
            guarantee="a write is on disk before the producer gets its reply, and a delivery is recorded "
            "as unacked in the same atomic step that takes it off the queue (worker.brokers.redis); routine "
            "operations repeat nothing, as for redis-everysec",
        ),
        Setup(
            name="rabbitmq-confirms",
            broker="rabbitmq",
            description="RabbitMQ classic durable queues, persistent messages, publisher confirms",
            options=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="classic", rabbitmq_confirm_publish=True),
            scenarios=_SINGLE_NODE,
            # Not power loss: classic queues (3.13+) confirm once the message is written to the OS,
            # without an fsync (rabbit_classic_queue_index_v2: "the v2 no longer calls fsync").
            # Not delayed tasks: they wait in the TTL ladder, and a classic queue dead-letters
            # at-most-once, without confirms ("at-least-once" dead lettering is for quorum source
            # queues only: https://www.rabbitmq.com/blog/2022/03/29/at-least-once-dead-lettering),
            # so a broker kill -9 loses or repeats hops (as the delayed scenario's records show).
            promises_no_loss=frozenset(_SINGLE_NODE) - {POWER_LOSS, "delayed"},
            promises_no_duplicates=frozenset(ROUTINE),
            guarantee="a confirm means the broker has written the persistent message to the OS (not fsynced: a "
            "broker crash keeps it, a machine crash may not). Routine operations repeat "
            "nothing: a warm shutdown acks what it finished before closing its channel, an ack leaves at once, and "
            "a task running when the broker goes away is cancelled (it runs again, once, from the requeued "
            "message) rather than finished unackable. Delayed tasks wait in classic queues, which dead-letter "
            "at-most-once: a broker crash can lose or repeat some (use quorum queues for delayed tasks that "
            "must survive a broker crash)",
        ),
        Setup(
            name="rabbitmq-noconfirm",
            broker="rabbitmq",
            description="the same without publisher confirms (Celery's default)",
            options=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="classic", rabbitmq_confirm_publish=False),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill", *_WORKER_ONLY}),
            promises_no_duplicates=frozenset(_WORKER_ONLY),
            guarantee="none for publishing: a publish returns once written to the socket. Worker deploys and "
            "deaths do not touch publishing: nothing lost or repeated",
        ),
        Setup(
            name="rabbitmq-quorum",
            broker="rabbitmq",
            description="RabbitMQ quorum queues with publisher confirms (3 nodes for node-loss)",
            options=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="quorum", rabbitmq_confirm_publish=True),
            scenarios=(*_SINGLE_NODE, "node-loss", *CLUSTER_POWER_LOSS),
            promises_no_loss=frozenset({*_SINGLE_NODE, "node-loss", *CLUSTER_POWER_LOSS}),
            promises_no_duplicates=frozenset(ROUTINE),
            guarantee="a confirm means a majority of the queue's replicas have the message on disk; routine "
            "operations repeat nothing, as for rabbitmq-confirms",
            cluster_size=3,
        ),
        Setup(
            name="redis-sentinel",
            broker="redis",
            description="Redis primary + 2 replicas + 3 Sentinels (default asynchronous replication, AOF everysec)",
            options=RedisOptions(appendonly=True, appendfsync="everysec"),
            scenarios=HA_SCENARIOS,
            promises_no_loss=frozenset(),
            guarantee="none across a failover: a write is acknowledged by the primary alone and replicated "
            "afterwards, so what the old primary acknowledged and had not sent on is gone once a replica is "
            "promoted; in a partition, the isolated primary keeps accepting writes that the heal discards",
            cluster_size=3,
        ),
        Setup(
            name="redis-sentinel-wait",
            broker="redis",
            description="the same with min-replicas-to-write 1, min-replicas-max-lag 2 on every data node",
            options=RedisOptions(appendonly=True, appendfsync="everysec"),
            scenarios=HA_SCENARIOS,
            promises_no_loss=frozenset(),
            guarantee="a bounded window, not a promise: a primary that has heard from no replica for 2 s refuses "
            "writes (NOREPLICAS), so an isolated primary stops accepting after ~2 s; a write it accepts is still "
            "replicated asynchronously and can be lost in a failover (only WAIT after each publish would say "
            "a replica has it)",
            cluster_size=3,
            min_replicas_to_write=1,
            min_replicas_max_lag=2,
        ),
        Setup(
            name="rabbitmq-quorum-cluster",
            broker="rabbitmq",
            description="3 RabbitMQ nodes, quorum queues, publisher confirms, pause_minority",
            options=RabbitOptions(extra_config=PAUSE_MINORITY),
            settings=_settings(rabbitmq_queue_type="quorum", rabbitmq_confirm_publish=True),
            scenarios=HA_SCENARIOS,
            promises_no_loss=frozenset(HA_SCENARIOS),
            guarantee="a confirm means a majority of the queue's replicas have the message on disk: losing or "
            "isolating one node of three loses nothing; an isolated node pauses (pause_minority) and its "
            "clients move to the majority",
            cluster_size=3,
        ),
        Setup(
            name="rabbitmq-classic-cluster",
            broker="rabbitmq",
            description="3 RabbitMQ nodes, classic durable queues (one node holds each), confirms, pause_minority",
            options=RabbitOptions(extra_config=PAUSE_MINORITY),
            settings=_settings(rabbitmq_queue_type="classic", rabbitmq_confirm_publish=True),
            scenarios=HA_SCENARIOS,
            promises_no_loss=frozenset(),
            guarantee="none: each queue lives on one node, unreplicated; while that node is down or cut off its "
            "queues are unavailable: publishing to them and consuming from them stop until it is back",
            cluster_size=3,
        ),
    )
}


#: The setups ``brokerstack bench`` measures by default: each runs on one broker node. The
#: high-availability groups (Sentinel, 3-node clusters) are measured by the failover and partition
#: scenarios only; a bench of them would measure one node of the group, i.e. another row's setup.
BENCHED_SETUPS: tuple[str, ...] = tuple(name for name, s in SETUPS.items() if set(s.scenarios) != set(HA_SCENARIOS))


def get_setup(name: str) -> Setup:
    try:
        return SETUPS[name]
    except KeyError:
        raise ValueError(f"unknown setup {name!r}; one of: {', '.join(SETUPS)}") from None
