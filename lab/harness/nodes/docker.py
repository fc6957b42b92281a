"""Docker driver: brokers in containers of the official images, created with
testcontainers and then driven through the Docker SDK.  The generic container
lifecycle is here; each broker's node class (its image, ports, files) is in
lab.harness.vendors.<broker>.nodes.

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
from typing import TYPE_CHECKING, Any

from . import proctree
from .base import BrokerNode, NodeError, moved_names, poll, untrack

if TYPE_CHECKING:
    import docker as docker_sdk
    from docker.models.containers import Container

#: Label on every container/network the lab creates (value "1").
LABEL = "brokerstack.test"
#: Label naming the creating process: "<hostname>:<pid>:<start ticks>".
OWNER_LABEL = "brokerstack.owner"

#: Seconds to wait for the engine in docker_available(); a dead socket should
#: not stall test collection.
PING_TIMEOUT = 3.0

#: Deadline for a killed/stopped container to be reported as not running.
STATE_TIMEOUT = 30.0


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
        return self._broker_pid(self._root_pid())

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


#: Names that moved to the vendor packages, still importable from here for importers that have not
#: switched yet (the RabbitMQ cluster and the Sentinel group, now in their vendors, have).
_MOVED = {
    "DEFAULT_REDIS_IMAGE": "lab.harness.vendors.redis.nodes",
    "REDIS_CONTAINER_DATA_DIR": "lab.harness.vendors.redis.nodes",
    "DockerRedisNode": "lab.harness.vendors.redis.nodes",
    "redis_image": "lab.harness.vendors.redis.nodes",
    "DEFAULT_RABBITMQ_IMAGE": "lab.harness.vendors.rabbitmq.nodes",
    "DockerRabbitNode": "lab.harness.vendors.rabbitmq.nodes",
    "rabbitmq_image": "lab.harness.vendors.rabbitmq.nodes",
}

__getattr__ = moved_names(__name__, _MOVED)
