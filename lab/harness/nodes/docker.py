"""Docker driver: brokers in containers of the official images, created with
testcontainers and then driven through the Docker SDK.

Each container's broker port is published on 127.0.0.1:<port> with <port>
chosen up front, so it survives docker kill + docker start.  Images are never
pulled: a missing image is an error naming the BROKERSTACK_*_IMAGE variable.
"""

from __future__ import annotations

import os

# No Ryuk image is available (and the lab removes its own containers): must be
# set before testcontainers reads its configuration on import.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import proctree
from .base import (
    LOOPBACK,
    BrokerNode,
    NodeError,
    RabbitEndpoints,
    RabbitOptions,
    RedisEndpoints,
    RedisOptions,
    amqp_probe,
    poll,
    random_suffix,
    redis_probe,
    untrack,
)
from .config import (
    AMQP_CONTAINER_PORT,
    MANAGEMENT_CONTAINER_PORT,
    REDIS_CONTAINER_PORT,
    REDIS_CONTAINER_TLS_DIR,
    redis_docker_args,
    render_enabled_plugins,
    render_rabbitmq_conf,
)
from .ports import free_port
from .tls import TLSFiles

if TYPE_CHECKING:
    import docker as docker_sdk
    from docker.models.containers import Container

#: Images used unless BROKERSTACK_REDIS_IMAGE / BROKERSTACK_RABBITMQ_IMAGE say otherwise.
DEFAULT_REDIS_IMAGE = "redis:8"
DEFAULT_RABBITMQ_IMAGE = "rabbitmq:4.0-management"

#: Label on every container/network the lab creates (value "1").
LABEL = "brokerstack.test"
#: Label naming the creating process: "<hostname>:<pid>:<start ticks>".
OWNER_LABEL = "brokerstack.owner"

#: Seconds to wait for the engine in docker_available(); a dead socket should
#: not stall test collection.
PING_TIMEOUT = 3.0

#: Deadline for a killed/stopped container to be reported as not running.
STATE_TIMEOUT = 30.0

#: Where the RabbitMQ images read extra config, plugins and the Erlang cookie.
RABBIT_CONF_D_FILE = "/etc/rabbitmq/conf.d/90-brokerstack.conf"
RABBIT_PLUGINS_FILE = "/etc/rabbitmq/enabled_plugins"
RABBIT_COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"
#: The images' data directories (what BrokerNode.data_mount is bound to).
RABBIT_MNESIA_DIR = "/var/lib/rabbitmq/mnesia"
REDIS_CONTAINER_DATA_DIR = "/data"

_BROKER_COMMS = {"redis": ("redis-server",), "rabbitmq": ("beam.smp",)}


def redis_image() -> str:
    return os.environ.get("BROKERSTACK_REDIS_IMAGE", DEFAULT_REDIS_IMAGE)


def rabbitmq_image() -> str:
    return os.environ.get("BROKERSTACK_RABBITMQ_IMAGE", DEFAULT_RABBITMQ_IMAGE)


def docker_client(timeout: float = 60.0) -> docker_sdk.DockerClient:
    import docker

    return docker.from_env(timeout=timeout)


def docker_available(timeout: float = PING_TIMEOUT) -> bool:
    """True if a Docker engine answers a ping within timeout seconds."""
    try:
        client = docker_client(timeout=timeout)
    except Exception:  # noqa: BLE001 - no SDK, no socket, bad DOCKER_HOST: all mean "no"
        return False
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def owner_token() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{proctree.start_ticks(pid)}"


def _owner_gone(token: str | None) -> bool:
    """True if token names a process on this host that no longer exists."""
    if not token:
        return False
    try:
        host, pid, ticks = token.rsplit(":", 2)
    except ValueError:
        return False
    return host == socket.gethostname() and str(proctree.start_ticks(int(pid))) != ticks


def lab_labels(kind: str) -> dict[str, str]:
    return {LABEL: "1", "brokerstack.kind": kind, OWNER_LABEL: owner_token()}


def remove_stale_containers(everything: bool = False) -> list[str]:
    """Remove containers (and networks) labelled brokerstack.test=1 whose
    creating process on this host is gone.  everything=True removes all of
    them, including those of test runs still in progress.  Returns names."""
    if not docker_available():
        return []
    client = docker_client()
    removed: list[str] = []
    try:
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}=1"}):
            if everything or _owner_gone(container.labels.get(OWNER_LABEL)):
                container.remove(force=True, v=True)
                removed.append(container.name)
        for network in client.networks.list(filters={"label": f"{LABEL}=1"}):
            if everything or _owner_gone(network.attrs.get("Labels", {}).get(OWNER_LABEL)):
                try:
                    network.remove()
                    removed.append(network.name)
                except Exception:  # noqa: BLE001 - still in use by a live container
                    pass
    finally:
        client.close()
    return removed


class DockerNode(BrokerNode):
    """Common machinery: one container created once, then started/killed."""

    driver = "docker"
    image: str

    def __init__(self, name: str, image: str) -> None:
        super().__init__(name)
        self.image = image
        self._container: Container | None = None

    # -- hooks -----------------------------------------------------------
    def _build(self) -> Any:
        """The configured (not yet started) testcontainers DockerContainer."""
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        if self._closed:
            raise NodeError(f"{self.describe()} is closed")
        if self._container is None:
            self._create_and_start()
            return
        if not self.is_running():
            # Same container: same data volume, hostname and published port.
            self._container.start()

    def _create_and_start(self) -> None:
        import docker

        client = docker_client()
        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise NodeError(
                f"image {self.image!r} is not present locally and the lab never pulls; "
                f"build/load it or point BROKERSTACK_{self.kind.upper()}_IMAGE at one that is"
            ) from None
        finally:
            client.close()
        container = self._build()
        try:
            container.start()
        finally:
            # Keep the handle even if start failed, so close() removes it.
            self._container = container._container
        if self._container is None:
            raise NodeError(f"{self.describe()}: container was not created")

    def _state(self) -> dict[str, Any]:
        import docker

        if self._container is None:
            return {}
        try:
            self._container.reload()
        except docker.errors.NotFound:
            return {}
        return self._container.attrs.get("State", {})

    def is_running(self) -> bool:
        return bool(self._state().get("Running"))

    def _root_pid(self) -> int | None:
        pid = self._state().get("Pid") or 0
        return pid if pid > 0 else None

    def pid(self) -> int | None:
        root = self._root_pid()
        if root is None:
            return None
        return proctree.find_in_tree(root, _BROKER_COMMS[self.kind]) or root

    def _wait_not_running(self) -> None:
        poll(
            lambda: not self.is_running(),
            STATE_TIMEOUT,
            0.05,
            f"{self.describe()} to stop",
            on_timeout=self._log_excerpt,
        )

    def kill(self) -> None:
        import docker

        if self._container is None or not self.is_running():
            return
        try:
            self._container.kill()
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: it was not running any more
                raise
        self._wait_not_running()

    def stop(self, timeout: float = 30) -> None:
        if self._container is None or not self.is_running():
            return
        self._container.stop(timeout=max(1, int(timeout)))
        self._wait_not_running()

    def logs(self, tail: int = 50) -> str:
        import docker

        if self._container is None:
            return ""
        try:
            return self._container.logs(tail=tail).decode(errors="replace")
        except docker.errors.NotFound:
            return ""

    def close(self) -> None:
        import docker

        if self._closed:
            return
        self._closed = True
        untrack(self)
        if self._container is None:
            return
        try:
            # v=True: also the anonymous data volume of the image.
            self._container.remove(force=True, v=True)
        except docker.errors.NotFound:
            pass

    def container_name(self) -> str:
        return self.name

    def _new_container(self, command: list[str] | None = None, **kwargs: Any) -> Any:
        from testcontainers.core.container import DockerContainer

        return DockerContainer(
            self.image,
            # A list is passed through to the Docker API as argv (an empty
            # argument like `--save ""` would not survive a command string).
            command=command,  # type: ignore[arg-type]
            name=self.name,
            # A fixed hostname: RabbitMQ's node name (rabbit@<hostname>), and
            # with it the data directory, must not change across restarts.
            hostname=self.name,
            labels=lab_labels(self.kind),
            **kwargs,
        )


class DockerRedisNode(RedisEndpoints, DockerNode):
    kind = "redis"

    def __init__(
        self,
        name: str | None = None,
        options: RedisOptions | None = None,
        *,
        image: str | None = None,
        tls: TLSFiles | None = None,
        tls_auth_clients: str = "optional",
    ) -> None:
        """``tls``: serve TLS only with these certificates (url rediss://), as the process driver does."""
        super().__init__(name or f"brokerstack-test-redis-{random_suffix()}", image or redis_image())
        self.options = options or RedisOptions()
        self._port = free_port()
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients

    @property
    def url(self) -> str:
        return super().url.replace("redis://", "rediss://", 1) if self.tls else super().url

    def _build(self) -> Any:
        auth = self.tls_auth_clients if self.tls else None
        container = self._new_container(command=redis_docker_args(self.options, tls_auth_clients=auth))
        # (address, port) pins the published port to loopback; testcontainers'
        # with_bind_ports() would publish on 0.0.0.0.
        container.ports[f"{REDIS_CONTAINER_PORT}/tcp"] = (LOOPBACK, self._port)
        if self.data_mount is not None:
            container.with_volume_mapping(str(self.data_mount), REDIS_CONTAINER_DATA_DIR, "rw")
        if self.tls is not None:
            # World-readable: the image runs redis-server as its own user. Throw-away test keys only.
            for source, target in (
                (self.tls.server_cert, "server.crt"),
                (self.tls.server_key, "server.key"),
                (self.tls.ca_cert, "ca.crt"),
            ):
                container.with_copy_into_container(source.read_bytes(), f"{REDIS_CONTAINER_TLS_DIR}/{target}", 0o644)
        return container

    def _probe(self) -> str:
        return redis_probe(self._port, tls=self.tls)


class DockerRabbitNode(RabbitEndpoints, DockerNode):
    kind = "rabbitmq"

    def __init__(
        self,
        name: str | None = None,
        options: RabbitOptions | None = None,
        *,
        image: str | None = None,
        network: Any | None = None,
        cookie: str | None = None,
        cluster_nodes: Sequence[str] = (),
    ) -> None:
        """network/cookie/cluster_nodes are set by RabbitCluster: a
        user-defined network (container names resolve there), the shared Erlang
        cookie, and the peers' node names for classic_config discovery."""
        super().__init__(name or f"brokerstack-test-rabbitmq-{random_suffix()}", image or rabbitmq_image())
        self.options = options or RabbitOptions()
        self.network = network
        self.cookie = cookie
        self.cluster_nodes = tuple(cluster_nodes)
        self._port = free_port()
        self._management_port = free_port() if self.options.management else None

    @property
    def node_name(self) -> str:
        return f"rabbit@{self.name}"

    def _build(self) -> Any:
        container = self._new_container()
        if self.network is not None:
            container.with_network(self.network).with_network_aliases(self.name)
        container.with_envs(
            RABBITMQ_DEFAULT_USER=self.options.user,
            RABBITMQ_DEFAULT_PASS=self.options.password,
            RABBITMQ_DEFAULT_VHOST=self.options.vhost,
        )
        container.ports[f"{AMQP_CONTAINER_PORT}/tcp"] = (LOOPBACK, self._port)
        if self._management_port is not None:
            container.ports[f"{MANAGEMENT_CONTAINER_PORT}/tcp"] = (LOOPBACK, self._management_port)
        # Copied in between create and start: the entrypoint then chowns
        # /var/lib/rabbitmq (cookie included) to rabbitmq, keeping mode 400.
        conf = render_rabbitmq_conf(self.options, cluster_nodes=self.cluster_nodes)
        container.with_copy_into_container(conf.encode(), RABBIT_CONF_D_FILE, 0o644)
        container.with_copy_into_container(
            render_enabled_plugins(self.options.management).encode(), RABBIT_PLUGINS_FILE, 0o644
        )
        if self.cookie is not None:
            container.with_copy_into_container(self.cookie.encode(), RABBIT_COOKIE_FILE, 0o400)
        if self.data_mount is not None:
            # Only the message store and schema database: the cookie and config stay in the image's dirs.
            container.with_volume_mapping(str(self.data_mount), RABBIT_MNESIA_DIR, "rw")
        return container

    def _probe(self) -> str:
        return amqp_probe(self._port, self.options)

    def rabbitmqctl(self, *args: str, timeout: float = 60) -> str:
        """Run rabbitmqctl inside the container; returns stdout, NodeError on
        failure.  timeout is accepted for parity with the process driver only."""
        if self._container is None:
            raise NodeError(f"{self.describe()} was never started")
        # exec_run has no deadline of its own; the CLI gives up on an
        # unreachable node by itself.
        result = self._container.exec_run(["rabbitmqctl", *args], demux=True)
        stdout, stderr = (part.decode(errors="replace") if part else "" for part in result.output)
        if result.exit_code != 0:
            raise NodeError(
                f"rabbitmqctl {' '.join(args)} in {self.name} exited {result.exit_code}: {(stderr or stdout).strip()}"
            )
        return stdout


def create_network(name: str) -> Any:
    """A user-defined bridge network named name (container names resolve on
    it), labelled for stale cleanup; a testcontainers Network."""
    from testcontainers.core.network import Network

    network = Network(docker_network_kw={"driver": "bridge", "labels": lab_labels("network")})
    network.name = name
    return network.create()


def remove_network(network: Any) -> None:
    import docker

    try:
        network.remove()
    except docker.errors.NotFound:
        pass
