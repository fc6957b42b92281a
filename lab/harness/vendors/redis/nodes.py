"""Redis nodes on both drivers: a container of the official image, a local redis-server, and
the process driver's Sentinel nodes. The lifecycle (create, start, kill, close) is the drivers'
(lab.harness.nodes.docker / .process); what is Redis' is here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lab.harness.nodes.base import (
    LOOPBACK,
    BrokerNode,
    NodeError,
    RedisOptions,
    StartedInContext,
    random_suffix,
    redis_url,
)
from lab.harness.nodes.docker import DockerNode
from lab.harness.nodes.factory import DriverChoice, resolve_driver
from lab.harness.nodes.ports import free_port
from lab.harness.nodes.process import ProcessNode
from lab.harness.nodes.tls import TLSFiles
from lab.harness.vendors.redis.config import (
    REDIS_CONTAINER_PORT,
    REDIS_CONTAINER_TLS_DIR,
    SENTINEL_MASTER,
    redis_docker_args,
    render_redis_conf,
    render_sentinel_conf,
)

#: The image used unless BROKERSTACK_REDIS_IMAGE says otherwise.
DEFAULT_REDIS_IMAGE = "redis:8"
#: The image's data directory (what BrokerNode.data_mount is bound to).
REDIS_CONTAINER_DATA_DIR = "/data"


def redis_image() -> str:
    return os.environ.get("BROKERSTACK_REDIS_IMAGE", DEFAULT_REDIS_IMAGE)


def find_redis_server() -> str | None:
    """redis-server binary (override: BROKERSTACK_REDIS_SERVER)."""
    return os.environ.get("BROKERSTACK_REDIS_SERVER") or shutil.which("redis-server")


def redis_probe(port: int, tls: Any = None) -> str:
    """PING the Redis on port (over TLS with ``tls``, a lab.harness.nodes.tls.TLSFiles, verifying the
    server and presenting the client certificate); returns "redis <version>"."""
    import redis

    secure: dict[str, Any] = {}
    if tls is not None:
        secure = {
            "ssl": True,
            "ssl_ca_certs": str(tls.ca_cert),
            "ssl_certfile": str(tls.client_cert),
            "ssl_keyfile": str(tls.client_key),
        }
    client = redis.Redis(host=LOOPBACK, port=port, socket_connect_timeout=1, socket_timeout=2, **secure)
    try:
        if not client.ping():
            raise NodeError("PING did not answer PONG")
        return f"redis {client.info('server')['redis_version']}"
    finally:
        client.close()


class RedisEndpoints:
    """The port and URL of a Redis node, however it runs (the port is chosen once, so a restarted
    node comes back on it)."""

    _port: int

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return redis_url(self._port)


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


class ProcessRedisNode(RedisEndpoints, ProcessNode):
    kind = "redis"

    def __init__(
        self,
        name: str | None = None,
        options: RedisOptions | None = None,
        *,
        base_dir: str | Path | None = None,
        port: int | None = None,
        tls: TLSFiles | None = None,
        tls_auth_clients: str = "optional",
    ) -> None:
        """``tls``: serve TLS only (no plaintext port) with these certificates; the node's url is
        then rediss://. ``tls_auth_clients``: "optional" checks a client certificate when one is
        sent, "yes" requires it."""
        super().__init__(name or f"brokerstack-test-redis-{random_suffix()}", base_dir)
        self.options = options or RedisOptions()
        self._port = port if port is not None else free_port()
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients

    @property
    def url(self) -> str:
        return super().url.replace("redis://", "rediss://", 1) if self.tls else super().url

    def _prepare(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise NodeError("redis-server not found (install redis-server or set BROKERSTACK_REDIS_SERVER)")
        self._binary = binary
        data_dir = self.data_dir
        data_dir.mkdir(exist_ok=True)
        (self.dir / "redis.conf").write_text(
            render_redis_conf(
                self.options, port=self._port, data_dir=data_dir, tls=self.tls, tls_auth_clients=self.tls_auth_clients
            )
        )

    @property
    def data_dir(self) -> Path:
        """Where Redis keeps its AOF/RDB: ``data`` in the node's dir, or on ``data_mount``."""
        return (self.data_mount if self.data_mount is not None else self.dir) / "data"

    def _command(self) -> tuple[list[str], dict[str, str] | None, str | None]:
        return [self._binary, str(self.dir / "redis.conf")], None, None

    def _probe(self) -> str:
        return redis_probe(self._port, tls=self.tls)


def make_tls_redis_node(
    tls: TLSFiles, driver: DriverChoice | None = None, *, tls_auth_clients: str = "optional"
) -> BrokerNode:
    """A not-yet-started TLS-only Redis (url rediss://127.0.0.1:<port>/0) serving ``tls``'s server
    certificate; ``tls_auth_clients`` "yes" also requires a client certificate signed by its CA."""
    if resolve_driver(driver) == "docker":
        return DockerRedisNode(tls=tls, tls_auth_clients=tls_auth_clients)
    return ProcessRedisNode(tls=tls, tls_auth_clients=tls_auth_clients)


class ProcessSentinelNode(ProcessRedisNode):
    """A Redis Sentinel (``redis-server sentinel.conf --sentinel``: Debian ships no separate
    redis-sentinel binary everywhere) watching the primary on ``primary_port``."""

    def __init__(
        self,
        primary_port: int,
        name: str | None = None,
        *,
        master: str = SENTINEL_MASTER,
        base_dir: str | Path | None = None,
        password: str | None = None,
    ) -> None:
        super().__init__(name or f"brokerstack-test-sentinel-{random_suffix()}", base_dir=base_dir)
        self.primary_port = primary_port
        self.master = master
        self.password = password

    @property
    def url(self) -> str:
        return f"sentinel://{LOOPBACK}:{self._port}"

    def _prepare(self) -> None:
        binary = find_redis_server()
        if binary is None:
            raise NodeError("redis-server not found (install redis-server or set BROKERSTACK_REDIS_SERVER)")
        self._binary = binary
        (self.dir / "sentinel.conf").write_text(
            render_sentinel_conf(
                port=self._port,
                data_dir=self.dir,
                primary_port=self.primary_port,
                master=self.master,
                password=self.password,
            )
        )

    def _command(self) -> tuple[list[str], dict[str, str] | None, str | None]:
        return [self._binary, str(self.dir / "sentinel.conf"), "--sentinel"], None, None

    def _probe(self) -> str:
        """Ready once it names the primary (what a client asks it first)."""
        import redis

        client = redis.Redis(
            host=LOOPBACK, port=self._port, password=self.password, socket_connect_timeout=1, socket_timeout=2
        )
        try:
            address = client.execute_command("SENTINEL", "get-master-addr-by-name", self.master)
            if not address or int(address[1]) != self.primary_port:
                raise NodeError(f"sentinel does not name the primary yet (answers {address!r})")
            return f"redis sentinel {client.info('server')['redis_version']}"
        finally:
            client.close()


class ProcessSentinelGroup(StartedInContext):
    """One Redis primary and ``sentinels`` Sentinels watching it, each on a free port.

    ``url`` is kombu's and Celery's form: ``sentinel://127.0.0.1:P1;sentinel://127.0.0.1:P2``;
    clients also need the service name, ``master``.
    """

    def __init__(
        self,
        sentinels: int = 2,
        *,
        master: str = SENTINEL_MASTER,
        base_dir: str | Path | None = None,
        options: RedisOptions | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        """``sentinel_password``: the sentinels' requirepass (the primary has none)."""
        self.master = master
        self.primary = ProcessRedisNode(options=options, base_dir=base_dir)
        self.sentinels = [
            ProcessSentinelNode(self.primary.port, master=master, base_dir=base_dir, password=sentinel_password)
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        return ";".join(node.url for node in self.sentinels)

    def start(self) -> None:
        self.primary.start()
        self.primary.wait_ready()
        for node in self.sentinels:
            node.start()
        for node in self.sentinels:
            node.wait_ready()

    def close(self) -> None:
        for node in [*self.sentinels, self.primary]:
            node.close()
