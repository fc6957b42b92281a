"""Broker node interface shared by the docker and process drivers.

A node is one broker (any of worker.brokers.PROFILES) that the lab starts, kills, restarts
and finally removes.  Its host port is chosen once and kept for the node's
whole life, so clients can reconnect after a kill + start.  What differs
between brokers lives in lab.harness.vendors.<broker>.
"""

from __future__ import annotations

import atexit
import re
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar, get_args
from urllib.parse import quote

from worker.settings import BrokerProfileName

from . import proctree

if TYPE_CHECKING:
    from lab.harness.vendors.base import LabVendor

#: The brokers a node can run: the product's broker names (worker.settings), declared once.
BrokerKind = BrokerProfileName
DriverName = Literal["docker", "process"]
AppendFsync = Literal["always", "everysec", "no"]

#: Every address a node listens on or is reached through: brokers here never
#: serve anything but this machine.
LOOPBACK = "127.0.0.1"

#: Default timeout for wait_ready(): RabbitMQ needs ~6 s on an idle 2-core
#: machine, several times that when three nodes boot at once.
DEFAULT_READY_TIMEOUT = 60.0

#: Lines of broker log attached to start/readiness errors.
ERROR_LOG_TAIL = 40
#: How far back error lines are looked for, and how many are quoted: a failed
#: RabbitMQ boot ends in a long crash report that buries the actual cause.
ERROR_LOG_SCAN = 500
ERROR_LINES_QUOTED = 15
_ERROR_LINE_RE = re.compile(r"\[error\]|\berror\b|FATAL|BOOT FAILED", re.IGNORECASE)

_MAXMEMORY_RE = re.compile(r"^\d+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$")


class NodeError(RuntimeError):
    """A broker node could not be started, stopped or queried."""


class NodeTimeout(NodeError, TimeoutError):
    """A broker node did not reach the wanted state before its deadline."""


@dataclass(frozen=True)
class RedisOptions:
    """Redis persistence knobs (presets redis-volatile / -everysec / -always)."""

    appendonly: bool = False
    appendfsync: AppendFsync = "everysec"
    save_snapshots: bool = False  # RDB snapshots off unless asked
    maxmemory: str | None = None  # e.g. "256mb"; None = no limit

    def __post_init__(self) -> None:
        if self.appendfsync not in get_args(AppendFsync):
            raise ValueError(f"appendfsync must be one of {get_args(AppendFsync)}, not {self.appendfsync!r}")
        if self.maxmemory is not None and not _MAXMEMORY_RE.match(self.maxmemory):
            raise ValueError(f"maxmemory must look like '256mb' or '1073741824', not {self.maxmemory!r}")


@dataclass(frozen=True)
class RabbitOptions:
    """RabbitMQ credentials and configuration."""

    user: str = "brokerstack"
    password: str = "brokerstack-test"  # never guest: guest is loopback-only and well known
    vhost: str = "/"
    management: bool = False  # management plugin on a free 127.0.0.1 port
    extra_config: str = ""  # appended to rabbitmq.conf, e.g. "consumer_timeout = 60000"

    def __post_init__(self) -> None:
        # These go verbatim into rabbitmq.conf lines.
        for field in ("user", "password", "vhost"):
            value = getattr(self, field)
            if not value or any(ch in value for ch in "\r\n#"):
                raise ValueError(f"RabbitOptions.{field} must be non-empty, one line, without '#': {value!r}")


def random_suffix(length: int = 6) -> str:
    return secrets.token_hex(length // 2 + 1)[:length]


def check_name(name: str) -> str:
    """Node names become container names, hostnames, directory names and
    Erlang node names: keep them to what all of those accept."""
    if not _NAME_RE.match(name):
        raise ValueError(f"node name must match {_NAME_RE.pattern}: {name!r}")
    return name


def redis_url(port: int, db: int = 0) -> str:
    return f"redis://{LOOPBACK}:{port}/{db}"


def amqp_url(port: int, options: RabbitOptions) -> str:
    """amqp://user:pass@127.0.0.1:port/<vhost>, vhost "/" written as %2F."""
    user, password = quote(options.user, safe=""), quote(options.password, safe="")
    return f"amqp://{user}:{password}@{LOOPBACK}:{port}/{quote(options.vhost, safe='')}"


def management_http_url(port: int, options: RabbitOptions) -> str:
    user, password = quote(options.user, safe=""), quote(options.password, safe="")
    return f"http://{user}:{password}@{LOOPBACK}:{port}"


def moved_names(module: str, moved: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that still finds the names that ``moved`` (name -> module now
    holding it), imported on first use: the vendor packages they moved to import the drivers."""

    def __getattr__(name: str) -> Any:
        if name in moved:
            return getattr(import_module(moved[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


T = TypeVar("T")

#: Nodes and clusters not closed yet, closed at interpreter exit as a safety
#: net (brokers run in their own sessions and would outlive us otherwise).
#: A SIGKILLed owner leaves them to remove_stale_nodes().
_unclosed: dict[int, Any] = {}


def track(resource: Any) -> None:
    _unclosed[id(resource)] = resource


def untrack(resource: Any) -> None:
    _unclosed.pop(id(resource), None)


@atexit.register
def close_unclosed() -> None:
    """Close every node/cluster still open (newest first)."""
    for resource in reversed(list(_unclosed.values())):
        try:
            resource.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def poll(
    probe: Callable[[], T | None],
    timeout: float,
    interval: float,
    describe: str,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Call probe until it returns something other than None (or False).

    Exceptions from probe count as "not yet"; the last one is chained to the
    NodeTimeout raised at the deadline, whose message ends with on_timeout().
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result is not None and result is not False:
                return result
        except NodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise NodeTimeout(f"{describe}: not done after {timeout:.0f}s{detail}{extra}") from last_error
        time.sleep(interval)


class StartedInContext:
    """``with`` starts it and closes it on the way out; a start that fails part-way closes what
    it had started before the error goes on (a half-started node or group leaves nothing behind)."""

    def start(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _enter(self) -> None:
        """What ``with`` does before the body runs."""
        self.start()

    def __enter__(self) -> Self:
        try:
            self._enter()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class BrokerNode(StartedInContext, ABC):
    """One broker the lab controls.  See lab/harness/nodes/__init__.py for the contract."""

    kind: BrokerKind
    driver: DriverName
    name: str

    def __init__(self, name: str) -> None:
        self.name = check_name(name)
        self._version: str | None = None
        self._closed = False
        #: A host directory to keep the broker's data in instead of the node's own (e.g. a
        #: lab.harness.nodes.lazyfs mount, for power-loss runs); set before the first start. The
        #: node never removes it: whoever made it does.
        self.data_mount: Path | None = None
        track(self)

    # -- addresses -------------------------------------------------------
    @property
    @abstractmethod
    def port(self) -> int:
        """Host port; stable across stop/kill/restart."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Client URL of this node."""

    @property
    def management_url(self) -> str | None:
        return None

    # -- lifecycle -------------------------------------------------------
    @abstractmethod
    def start(self) -> None:
        """Start the broker (creating its data on first start); no-op if running."""

    @abstractmethod
    def stop(self, timeout: float = 30) -> None:
        """Graceful stop (SIGTERM / docker stop), data kept."""

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the broker, data kept; returns once it is dead."""

    @abstractmethod
    def is_running(self) -> bool: ...

    @abstractmethod
    def pid(self) -> int | None:
        """Host pid of the broker process (redis-server / beam.smp)."""

    @abstractmethod
    def logs(self, tail: int = 50) -> str: ...

    @abstractmethod
    def close(self) -> None:
        """Stop and remove everything of this node; safe to call twice."""

    @abstractmethod
    def _probe(self) -> str:
        """Raise unless the broker serves clients; return its version string."""

    def _root_pid(self) -> int | None:
        """Top of the broker's process tree (defaults to pid())."""
        return self.pid()

    @property
    def vendor(self) -> LabVendor:
        """What the lab knows about this node's broker (lab.harness.vendors)."""
        from lab.harness.vendors import vendor_for

        return vendor_for(self.kind)

    def _poll_interval(self) -> float:
        return self.vendor.poll_interval

    def _broker_pid(self, root: int | None) -> int | None:
        """The broker process in the tree under ``root`` (the vendor names it), else ``root``."""
        if root is None:
            return None
        return proctree.find_in_tree(root, self.vendor.process_names) or root

    def wait_ready(self, timeout: float = DEFAULT_READY_TIMEOUT) -> None:
        """Poll until the broker serves authenticated clients.

        Fails at once (NodeError) if the broker exits meanwhile, and with
        NodeTimeout at the deadline; both carry the tail of the broker's log.
        """

        def probe() -> str:
            if not self.is_running():
                raise NodeError(f"{self.describe()} exited before it was ready\n{self._log_excerpt()}")
            return self._probe()

        self._version = poll(
            probe,
            timeout,
            self._poll_interval(),
            f"{self.describe()} readiness",
            on_timeout=self._log_excerpt,
        )

    def restart(self, graceful: bool = True) -> None:
        if graceful:
            self.stop()
        else:
            self.kill()
        self.start()
        self.wait_ready()

    def version(self) -> str:
        """ "redis 7.0.15" / "rabbitmq 3.10.8", as reported by the running broker."""
        if self._version is None:
            if not self.is_running():
                raise NodeError(f"{self.describe()} is not running and was never ready: version unknown")
            self._version = self._probe()
        return self._version

    def resource_usage(self) -> dict[str, Any]:
        """{"rss_bytes": int, "cpu_seconds": float} over the broker's process tree."""
        root = self._root_pid()
        if root is None:
            raise NodeError(f"{self.describe()} is not running")
        return proctree.tree_usage(root)

    def describe(self) -> str:
        return f"{self.kind} node {self.name!r} ({self.driver}, port {self.port})"

    def _log_excerpt(self) -> str:
        """The first error lines of the recent log, then its last lines."""
        try:
            lines = self.logs(ERROR_LOG_SCAN).splitlines()
        except Exception as exc:  # noqa: BLE001 - logs are a courtesy in error paths
            return f"(logs unavailable: {exc!r})"
        tail = lines[-ERROR_LOG_TAIL:]
        earlier = lines[:-ERROR_LOG_TAIL] if len(lines) > ERROR_LOG_TAIL else []
        errors = [line for line in earlier if _ERROR_LINE_RE.search(line)][:ERROR_LINES_QUOTED]
        text = ""
        if errors:
            text += f"--- first error lines of {self.name} ---\n" + "\n".join(errors) + "\n"
        return text + f"--- last {len(tail)} log lines of {self.name} ---\n" + "\n".join(tail)

    def _enter(self) -> None:
        self.start()
        self.wait_ready()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} port={self.port}>"
