"""RabbitMQ nodes on both drivers: a container of the official image and a local
rabbitmq-server with its private epmd and Erlang HOME. The lifecycle (create, start, kill, close)
is the drivers' (lab.harness.nodes.docker / .process); what is RabbitMQ's is here."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import string
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.harness.nodes import proctree
from lab.harness.nodes.base import (
    LOOPBACK,
    NodeError,
    RabbitOptions,
    amqp_url,
    management_http_url,
    poll,
    random_suffix,
)
from lab.harness.nodes.docker import DockerNode
from lab.harness.nodes.ports import free_port, port_accepts
from lab.harness.nodes.process import KILL_TIMEOUT, ProcessNode, make_dir
from lab.harness.vendors.rabbitmq.config import (
    AMQP_CONTAINER_PORT,
    MANAGEMENT_CONTAINER_PORT,
    rabbit_process_env,
    rabbitmqctl_env,
    render_enabled_plugins,
    render_rabbitmq_conf,
)

#: The image used unless BROKERSTACK_RABBITMQ_IMAGE says otherwise.
DEFAULT_RABBITMQ_IMAGE = "rabbitmq:4.0-management"

#: Where the RabbitMQ images read extra config, plugins and the Erlang cookie.
RABBIT_CONF_D_FILE = "/etc/rabbitmq/conf.d/90-brokerstack.conf"
RABBIT_PLUGINS_FILE = "/etc/rabbitmq/enabled_plugins"
RABBIT_COOKIE_FILE = "/var/lib/rabbitmq/.erlang.cookie"
#: The image's data directory (what BrokerNode.data_mount is bound to).
RABBIT_MNESIA_DIR = "/var/lib/rabbitmq/mnesia"


def rabbitmq_image() -> str:
    return os.environ.get("BROKERSTACK_RABBITMQ_IMAGE", DEFAULT_RABBITMQ_IMAGE)


#: Where distributions put the real rabbitmq-server script.  /usr/sbin's
#: rabbitmq-server is a wrapper that su's to the rabbitmq user and drops the
#: environment, so it cannot run a node with its own ports and directories.
RABBITMQ_SERVER_PATHS: tuple[str, ...] = (
    "/usr/lib/rabbitmq/bin/rabbitmq-server",
    "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server",
    "/opt/rabbitmq/sbin/rabbitmq-server",
    "/usr/local/lib/rabbitmq/sbin/rabbitmq-server",
)

#: The unprivileged account RabbitMQ drops to when the lab runs as root, as a
#: packaged install would (as root it runs, but owns its files as root).
RABBITMQ_USER = "rabbitmq"


def _is_wrapper(path: str) -> bool:
    if os.path.basename(os.path.realpath(path)) == "rabbitmq-script-wrapper":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return True
    return b"rabbitmq-script-wrapper" in head or b"su rabbitmq" in head


def find_rabbitmq_server() -> str | None:
    """The real rabbitmq-server start script (override:
    BROKERSTACK_RABBITMQ_SERVER), never the /usr/sbin su-wrapper."""
    override = os.environ.get("BROKERSTACK_RABBITMQ_SERVER")
    if override:
        return override
    candidates: list[str] = []
    for pattern in RABBITMQ_SERVER_PATHS:
        candidates += sorted(glob.glob(pattern), reverse=True)
    on_path = shutil.which("rabbitmq-server")
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        if os.access(path, os.X_OK) and not _is_wrapper(path):
            return path
    return None


def find_epmd() -> str | None:
    return shutil.which("epmd")


def _rabbit_account() -> str | None:
    """Account to run RabbitMQ as: rabbitmq when we are root and it exists."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RABBITMQ_USER)
    except KeyError:
        return None
    return RABBITMQ_USER


def _chown_tree(path: Path, account: str | None) -> None:
    if account is None:
        return
    for root, dirs, files in os.walk(path):
        shutil.chown(root, account, account)
        for entry in dirs + files:
            shutil.chown(os.path.join(root, entry), account, account)


def amqp_probe(port: int, options: RabbitOptions) -> str:
    """Open an authenticated AMQP connection; returns "rabbitmq <version>"."""
    import amqp

    conn = amqp.Connection(
        f"{LOOPBACK}:{port}",
        userid=options.user,
        password=options.password,
        virtual_host=options.vhost,
        connect_timeout=2,
        read_timeout=5,
        write_timeout=5,
    )
    try:
        conn.connect()
        version = conn.server_properties.get("version", "?")
        if isinstance(version, bytes):
            version = version.decode()
        return f"rabbitmq {version}"
    finally:
        try:
            conn.collect()
        except Exception:  # noqa: BLE001 - best effort close of a probe socket
            pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass


class RabbitEndpoints:
    """The AMQP and management ports and URLs of a RabbitMQ node, however it runs."""

    _port: int
    _management_port: int | None
    options: RabbitOptions

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return amqp_url(self._port, self.options)

    @property
    def management_url(self) -> str | None:
        if self._management_port is None:
            return None
        return management_http_url(self._management_port, self.options)


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


class Epmd:
    """A private Erlang port mapper on its own port, so nodes never use or
    leave behind a daemon on 4369.  One per node group; killed on close()."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.workdir = workdir
        self._popen: subprocess.Popen[bytes] | None = None

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.is_running():
            return
        binary = find_epmd()
        if binary is None:
            raise NodeError("epmd not found on PATH (it comes with Erlang)")
        account = _rabbit_account()
        make_dir(self.workdir)
        self._popen = subprocess.Popen(
            # Foreground (no -daemon), so its pid is ours to kill.
            [binary, "-port", str(self.port)],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ERL_EPMD_ADDRESS": LOOPBACK},
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            user=account,
            group=account,
        )

        def up() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                raise NodeError(f"epmd on port {self.port} exited with {self._popen.returncode}")
            return port_accepts(self.port)

        poll(up, timeout, 0.02, f"epmd on port {self.port}")

    def close(self) -> None:
        if self._popen is None:
            return
        if self._popen.poll() is None:
            proctree.kill_tree(self._popen.pid, timeout=KILL_TIMEOUT)
        self._popen.wait()
        self._popen = None


def _new_cookie() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(32))


def make_erlang_home(path: Path, cookie: str | None = None) -> Path:
    """A HOME holding an Erlang cookie, shared by the nodes of one group and
    the CLI tools that talk to them.  A private HOME instead of
    /var/lib/rabbitmq: nothing of the system's RabbitMQ is read or created,
    and there is no race on who creates the cookie first."""
    make_dir(path)
    cookie_file = path / ".erlang.cookie"
    if not cookie_file.exists():
        cookie_file.write_text(cookie or _new_cookie())
    cookie_file.chmod(0o400)  # Erlang refuses a cookie others can read
    _chown_tree(path, _rabbit_account())
    return path


class ProcessRabbitNode(RabbitEndpoints, ProcessNode):
    kind = "rabbitmq"

    def __init__(
        self,
        name: str | None = None,
        options: RabbitOptions | None = None,
        *,
        base_dir: str | Path | None = None,
        epmd: Epmd | None = None,
        erlang_home: Path | None = None,
        cluster_nodes: Sequence[str] = (),
    ) -> None:
        """epmd/erlang_home are shared within a cluster; a lone node makes its
        own (inside its dir) and removes them on close().  cluster_nodes are
        the Erlang node names for classic_config peer discovery."""
        super().__init__(name or f"brokerstack-test-rabbitmq-{random_suffix()}", base_dir)
        self.options = options or RabbitOptions()
        self.node_name = f"{self.name}@localhost"
        self.cluster_nodes = tuple(cluster_nodes)
        # Chosen once, so a restarted node comes back on the same ports.
        self._port = free_port()
        self._dist_port = free_port()
        self._management_port = free_port() if self.options.management else None
        self._owns_epmd = epmd is None
        self.epmd = epmd if epmd is not None else Epmd(self.dir)
        self._erlang_home = erlang_home
        self._env: dict[str, str] = {}

    @property
    def dist_port(self) -> int:
        return self._dist_port

    def _prepare(self) -> None:
        script = find_rabbitmq_server()
        if script is None:
            raise NodeError(
                "rabbitmq-server start script not found (install rabbitmq-server or set BROKERSTACK_RABBITMQ_SERVER)"
            )
        self._script = script
        for sub in ("mnesia", "log", "conf.d"):
            (self.dir / sub).mkdir(exist_ok=True)
        if self.data_mount is not None:
            (self.data_mount / "mnesia").mkdir(exist_ok=True)
            _chown_tree(self.data_mount / "mnesia", _rabbit_account())
        (self.dir / "rabbitmq.conf").write_text(
            render_rabbitmq_conf(self.options, management_port=self._management_port, cluster_nodes=self.cluster_nodes)
        )
        (self.dir / "enabled_plugins").write_text(render_enabled_plugins(self.options.management))
        (self.dir / "rabbitmq-env.conf").write_text("# empty on purpose: the environment says it all\n")
        if self._erlang_home is None:
            self._erlang_home = make_erlang_home(self.dir / "home")
        self._env = rabbit_process_env(
            node_name=self.node_name,
            node_port=self._port,
            dist_port=self._dist_port,
            epmd_port=self.epmd.port,
            node_dir=self.dir,
            home=self._erlang_home,
            path=os.environ.get("PATH", "/usr/bin:/bin"),
        )
        if self.data_mount is not None:
            self._env["RABBITMQ_MNESIA_BASE"] = str(self.data_mount / "mnesia")
        _chown_tree(self.dir, _rabbit_account())

    def _before_start(self) -> None:
        self.epmd.start()

    def _command(self) -> tuple[list[str], dict[str, str] | None, str | None]:
        return [self._script], self._env, _rabbit_account()

    def _after_close(self) -> None:
        if self._owns_epmd:
            self.epmd.close()

    def _probe(self) -> str:
        return amqp_probe(self._port, self.options)

    def rabbitmqctl(self, *args: str, timeout: float = 60) -> str:
        """Run rabbitmqctl against this node; returns stdout, NodeError on failure."""
        if not self._prepared:
            raise NodeError(f"{self.describe()} was never started")
        ctl = str(Path(self._script).with_name("rabbitmqctl"))
        account = _rabbit_account()
        try:
            done = subprocess.run(
                [ctl, "-n", self.node_name, *args],
                env=rabbitmqctl_env(self._env),
                cwd=self._erlang_home,
                capture_output=True,
                timeout=timeout,
                user=account,
                group=account,
            )
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"rabbitmqctl {' '.join(args)} on {self.node_name} timed out") from exc
        if done.returncode != 0:
            raise NodeError(
                f"rabbitmqctl {' '.join(args)} on {self.node_name} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace').strip() or done.stdout.decode(errors='replace').strip()}"
            )
        return done.stdout.decode(errors="replace")

    def describe(self) -> str:
        return f"rabbitmq node {self.node_name} (process, port {self._port})"
