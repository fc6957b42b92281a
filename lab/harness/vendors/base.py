"""What the lab knows about one broker, behind one small interface.

Everything generic (a container's or a process's lifecycle, stacks, scenarios, measurements)
asks the broker's :class:`LabVendor` instead of comparing broker names; each broker's package
(``lab/harness/vendors/<broker>/``) holds its node classes and its vendor object, and
``lab.harness.vendors.VENDORS`` has one per profile of ``worker.brokers.PROFILES``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from lab.harness.nodes.base import BrokerNode, DriverName
    from lab.harness.stacks import Stack
    from worker.settings import Settings

#: The longest a memory reading waits for the broker's figures to settle; past it, the reading
#: is flagged unsettled in the record.
MEMORY_SETTLE_TIMEOUT = 30.0


class RedeliveryOptions(Protocol):
    """The run options a vendor reads to bound how soon a dead worker's tasks come back (the
    chaos runner's RunOptions has them; the harness does not import the experiments)."""

    @property
    def visibility_timeout(self) -> int: ...
    @property
    def restore_interval(self) -> float: ...
    @property
    def restore_throttle(self) -> int: ...


class LabVendor(ABC):
    """One broker as the lab sees it. Subclasses set the class attributes and the hooks that
    differ; the defaults are what a broker with no peculiarity does."""

    #: The broker profile's name (``worker.brokers.PROFILES``), which is also the node kind.
    name: ClassVar[str]
    #: The type of this broker's node options (``make_node(options=...)``, ``Setup.options``).
    options_type: ClassVar[type[Any]]
    #: The make_node keyword that also takes them (``make_node("redis", redis=RedisOptions())``).
    options_field: ClassVar[str]
    #: Pause between two readiness probes of a starting node.
    poll_interval: ClassVar[float]
    #: Command names of the broker process inside its process tree (what ``pid()`` returns).
    process_names: ClassVar[tuple[str, ...]]
    #: The binary the process driver runs, named in "not installed" messages.
    server_binary: ClassVar[str]
    #: Transports a run may choose between (REDIS_TRANSPORT); the first is the default. Empty:
    #: the broker has one client transport and nothing to choose.
    transports: ClassVar[tuple[str, ...]] = ()
    #: Transports run to be measured beside the others, never promised anything (see Setup.promises).
    unpromised_transports: ClassVar[tuple[str, ...]] = ()
    #: Rough seconds from a broker fault until the stack serves again (sizes chaos' automatic
    #: publish rate; a guess to spread faults, not a measurement).
    recovery_seconds: ClassVar[float]
    #: Seconds a chaos run's drain waits without progress before it gives up (see drain_idle_limit).
    drain_idle_seconds: ClassVar[float] = 60.0
    #: Rough seconds a killed worker's tasks take to be handed out again, beyond redelivery_delay
    #: (sizes worker-kill's automatic publish rate).
    requeue_seconds: ClassVar[float] = 0.0
    #: Run parameters that do not apply to this broker (left out of its chaos records).
    ignored_run_parameters: ClassVar[tuple[str, ...]] = ()
    #: Node options (make_node kwargs) for measuring the broker's memory (lab.experiments.sizing)
    #: and for counting its operations (lab.experiments.task_cost): what makes them readable.
    memory_node_options: ClassVar[dict[str, Any]] = {}
    counters_node_options: ClassVar[dict[str, Any]] = {}
    #: The figure of :meth:`memory` this broker's memory is sized by: what its own limit counts
    #: (the report's sizing section headlines it).
    memory_headline: ClassVar[str]

    #: Seconds between two power cuts of one node (sizes the power-loss scenarios' automatic rate):
    #: enough for it to boot again on what survived.
    power_cut_period: ClassVar[float] = 5.0

    # --- nodes ----------------------------------------------------------------------------------

    @abstractmethod
    def make_node(
        self, driver: DriverName, options: Any = None, *, name: str | None = None, base_dir: str | Path | None = None
    ) -> BrokerNode:
        """A not-yet-started node on ``driver`` with ``options`` (this broker's options type)."""

    @abstractmethod
    def process_available(self) -> bool:
        """True if the process driver can run this broker on this machine."""

    def describe_options(self, options: Any) -> dict[str, Any]:
        """The fields a setup's record gives its node options (lab.harness.setups.Setup.describe);
        with None, each field this broker adds, empty."""
        return {}

    def make_group(self, setup: Any, driver: DriverName) -> tuple[str, Any]:
        """The multi-node group of a setup with cluster_size > 1, and the Stack attribute that
        holds it ("cluster", "sentinel")."""
        raise NotImplementedError(f"{self.name} has no multi-node setups")

    # --- settings -------------------------------------------------------------------------------

    @abstractmethod
    def settings_urls(self, broker_url: str, results_url: str | None) -> dict[str, Any]:
        """The Settings fields that point a stack at ``broker_url`` with results in
        ``results_url`` (None: wherever this broker keeps them without a results node)."""

    def group_settings(self, group: Any, results_url: str) -> dict[str, Any]:
        """The Settings fields that point a stack at a group from :meth:`make_group`."""
        return self.settings_urls(group.url, results_url)

    def run_settings(self, options: RedeliveryOptions, transport: str | None) -> dict[str, Any]:
        """Settings a chaos run of these options sets on this broker."""
        return {}

    def transport_for(self, transport: str | None) -> str | None:
        """The transport a run uses when asked for ``transport`` (None: no choice here)."""
        if not self.transports:
            return None
        return transport or self.transports[0]

    @property
    def default_transport(self) -> str | None:
        return self.transports[0] if self.transports else None

    # --- chaos ----------------------------------------------------------------------------------

    def redelivery_delay(self, options: RedeliveryOptions) -> float:
        """Seconds before an unacknowledged message of a dead worker is handed out again."""
        return 0.0

    def drain_idle_limit(self, options: RedeliveryOptions) -> float:
        """Seconds a chaos run's drain waits without progress before it gives up."""
        return self.drain_idle_seconds

    def unacked_redelivery_delay(self, options: RedeliveryOptions) -> float | None:
        """The redelivery delay that is the broker's own bound, recorded with worker-kill runs
        (None: the broker redelivers as soon as the connection drops)."""
        return None

    @abstractmethod
    def pending_messages(self, stack: Stack) -> int:
        """Messages the broker still holds in the work queues, delivered-but-unacked included."""

    def dead_lettered(self, stack: Stack) -> int | None:
        """Messages the broker's native dead-letter queue holds (None: it has none)."""
        return None

    def delayed_held(self, stack: Stack) -> int | None:
        """Delayed tasks the broker holds that the profile's ``delayed_depth`` does not count
        (None: it counts them all)."""
        return None

    def persisted_log(self, stack: Stack) -> bytes | None:
        """The broker's append-only log, if it keeps one the run can read (evidence of what it
        stored); None otherwise."""
        return None

    def publish_options(self, setup_settings: Any) -> dict[str, Any]:
        """kombu transport options a raw publisher uses for a setup's settings."""
        return {}

    def confirms_publishes(self, setup_settings: Any) -> bool | None:
        """Whether a setup's publishes are confirmed by the broker (None: not a choice here)."""
        return None

    # --- measurements ---------------------------------------------------------------------------

    @abstractmethod
    def memory(self, node: BrokerNode, queue: str, messages: int) -> dict[str, float]:
        """What the broker's memory holds once settled (``settled`` 0.0 if it never did);
        ``messages``: what ``queue`` holds now."""

    @abstractmethod
    def counters(self, node: BrokerNode, at_least: dict[str, int]) -> dict[str, int]:
        """The broker's cumulative operation counters, once those in ``at_least`` reached them."""

    def queue_type(self, settings: Settings) -> str | None:
        """The kind of queue a stack of ``settings`` runs on, as records name it (None: one kind)."""
        return None

    def queue_label(self, settings: Settings) -> str:
        """The queue kind priority records are keyed by (every broker names one)."""
        return self.queue_type(settings) or self.name

    def priority_variants(self) -> tuple[dict[str, Any], ...]:
        """Settings overrides the priority measurement runs this broker with, one record each."""
        return ({},)

    # --- machine crashes (lab.experiments.chaos.scenarios.power_loss) -------------------------------

    def prepare_for_lazyfs(self, node: BrokerNode) -> None:  # noqa: B027 (most brokers need nothing)
        """Adjust a node whose data directory is a LazyFS mount, before it starts."""

    def repair_after_power_loss(self, node: BrokerNode, error: str) -> list[str] | None:
        """Run the broker's own repair tool on a stopped node that would not boot on what survived,
        if ``error`` (why) says the tool can help: the last lines of its output; None otherwise."""
        return None

    def after_wipe(self, node: BrokerNode) -> None:  # noqa: B027 (most brokers need nothing)
        """Recreate what a stopped node needs in its emptied data directory."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"
