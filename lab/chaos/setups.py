"""The broker setups that chaos runs compare: named presets usable from the CLI and the tests.

A setup is what a user would deploy: which broker, how it persists, and the brokerstack settings
that change its delivery guarantees (publisher confirms, queue type). Each setup says which
scenarios apply to it and which of them it *promises* to survive without losing an acknowledged
task; the tests assert exactly those promises and only report the numbers of the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from lab.nodes import RabbitOptions, RedisOptions

BrokerKind = Literal["redis", "rabbitmq"]

#: Every scenario name (defined in lab.chaos.scenarios), in the order tables show them.
SCENARIO_NAMES = ("broker-kill", "broker-restart", "worker-kill", "producer-outage", "publish-kill", "node-loss")

_SINGLE_NODE = ("broker-kill", "broker-restart", "worker-kill", "producer-outage", "publish-kill")

GUARANTEE_NO_LOSS = "lost == 0"


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
    redis: RedisOptions | None = None
    rabbit: RabbitOptions | None = None
    #: Settings fields (lower-case env names) that differ from brokerstack's defaults.
    settings: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: Nodes of the cluster the ``node-loss`` scenario runs on (1: no cluster scenarios).
    cluster_size: int = 1

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIO_NAMES)
        if unknown:
            raise ValueError(f"setup {self.name}: unknown scenarios {sorted(unknown)}")
        if not self.promises_no_loss <= set(self.scenarios):
            raise ValueError(f"setup {self.name}: promises for scenarios it does not run")
        if (self.broker == "redis") != (self.redis is not None) or (self.broker == "rabbitmq") != (
            self.rabbit is not None
        ):
            raise ValueError(f"setup {self.name}: give exactly the node options of its broker")
        object.__setattr__(self, "settings", MappingProxyType(dict(self.settings)))

    def applies_to(self, scenario: str) -> bool:
        return scenario in self.scenarios

    def promises(self, scenario: str) -> bool:
        """True if this setup guarantees no acknowledged task is lost in ``scenario``."""
        return scenario in self.promises_no_loss

    def guarantee_for(self, scenario: str) -> str | None:
        """The strongest promise for ``scenario``, as the records and tables name it."""
        return GUARANTEE_NO_LOSS if self.promises(scenario) else None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "broker": self.broker,
            "description": self.description,
            "guarantee": self.guarantee,
            "scenarios": list(self.scenarios),
            "promises_no_loss": [s for s in SCENARIO_NAMES if s in self.promises_no_loss],
            "redis": None if self.redis is None else {
                "appendonly": self.redis.appendonly,
                "appendfsync": self.redis.appendfsync if self.redis.appendonly else None,
                "save_snapshots": self.redis.save_snapshots,
            },
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
            redis=RedisOptions(appendonly=False, save_snapshots=False),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill"}),
            guarantee="none for the broker: a restart empties it; acks_late covers worker crashes only",
        ),
        Setup(
            name="redis-everysec",
            broker="redis",
            description="Redis, AOF with appendfsync everysec",
            redis=RedisOptions(appendonly=True, appendfsync="everysec"),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill", "broker-restart"}),
            guarantee="a clean shutdown writes everything to disk; a crash may lose the last second",
        ),
        Setup(
            name="redis-always",
            broker="redis",
            description="Redis, AOF with appendfsync always (fsync before every reply)",
            redis=RedisOptions(appendonly=True, appendfsync="always"),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset(_SINGLE_NODE),
            guarantee="a write is on disk before the producer gets its reply, and a delivery is recorded "
            "as unacked in the same atomic step that takes it off the queue (worker.brokers.redis)",
        ),
        Setup(
            name="rabbitmq-confirms",
            broker="rabbitmq",
            description="RabbitMQ classic durable queues, persistent messages, publisher confirms",
            rabbit=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="classic", rabbitmq_confirm_publish=True),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset(_SINGLE_NODE),
            guarantee="a confirm means the broker has written the persistent message",
        ),
        Setup(
            name="rabbitmq-noconfirm",
            broker="rabbitmq",
            description="the same without publisher confirms (Celery's default)",
            rabbit=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="classic", rabbitmq_confirm_publish=False),
            scenarios=_SINGLE_NODE,
            promises_no_loss=frozenset({"worker-kill"}),
            guarantee="none for publishing: a publish returns once written to the socket",
        ),
        Setup(
            name="rabbitmq-quorum",
            broker="rabbitmq",
            description="RabbitMQ quorum queues with publisher confirms (3 nodes for node-loss)",
            rabbit=RabbitOptions(),
            settings=_settings(rabbitmq_queue_type="quorum", rabbitmq_confirm_publish=True),
            scenarios=(*_SINGLE_NODE, "node-loss"),
            promises_no_loss=frozenset({*_SINGLE_NODE, "node-loss"}),
            guarantee="a confirm means a majority of the queue's replicas have the message on disk",
            cluster_size=3,
        ),
    )
}


def get_setup(name: str) -> Setup:
    try:
        return SETUPS[name]
    except KeyError:
        raise ValueError(f"unknown setup {name!r}; one of: {', '.join(SETUPS)}") from None
