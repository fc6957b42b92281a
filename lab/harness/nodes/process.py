"""Process driver: brokers run as local processes from the distribution's
packages (redis-server, rabbitmq-server), each in its own directory.

Layout: <base_dir>/<node name>/ holds the node's config, data and log
(stdout.log); a RabbitCluster puts its nodes and their shared Erlang HOME in
<base_dir>/<cluster name>/.  Every process is started with cwd inside its
directory, which is how remove_stale_process_nodes() finds leftovers.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import string
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from . import proctree
from .base import (
    LOOPBACK,
    BrokerKind,
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
    SENTINEL_MASTER,
    rabbit_process_env,
    rabbitmqctl_env,
    render_enabled_plugins,
    render_rabbitmq_conf,
    render_redis_conf,
    render_sentinel_conf,
)
from .ports import free_port, port_accepts
from .tls import TLSFiles

#: Parent of all process-node directories (override: BROKERSTACK_NODES_DIR).
DEFAULT_BASE_DIR = "/tmp/brokerstack-nodes"

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

#: File in a node/cluster dir naming the process that owns it ("pid starttime").
OWNER_FILE = "owner"

#: How long a process-node kill may take before the survivors are reported.
KILL_TIMEOUT = 15.0

#: Dirs without an owner file younger than this may still be being created.
_OWNERLESS_GRACE_SECONDS = 60.0

_BROKER_COMMS = {"redis": ("redis-server",), "rabbitmq": ("beam.smp",)}


def base_dir_default() -> Path:
    return Path(os.environ.get("BROKERSTACK_NODES_DIR", DEFAULT_BASE_DIR))


def find_redis_server() -> str | None:
    """redis-server binary (override: BROKERSTACK_REDIS_SERVER)."""
    return os.environ.get("BROKERSTACK_REDIS_SERVER") or shutil.which("redis-server")


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


def process_available(kind: BrokerKind) -> bool:
    """True if the process driver can run kind on this machine."""
    if kind == "redis":
        return find_redis_server() is not None
    return find_rabbitmq_server() is not None and find_epmd() is not None


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


def make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    # RabbitMQ runs as another user and must traverse every parent.
    path.chmod(0o755)


def write_owner(path: Path) -> None:
    (path / OWNER_FILE).write_text(f"{os.getpid()} {proctree.start_ticks(os.getpid())}\n")


def _owner_alive(path: Path) -> bool:
    try:
        pid_text, ticks_text = (path / OWNER_FILE).read_text().split()
    except (OSError, ValueError):
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return False
        return age < _OWNERLESS_GRACE_SECONDS
    return str(proctree.start_ticks(int(pid_text))) == ticks_text


def _tail(path: Path, lines: int) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except FileNotFoundError:
        return ""


def remove_stale_process_nodes(base_dir: str | Path | None = None) -> list[str]:
    """Kill the processes of, and delete, node/cluster dirs whose owning
    process is gone (a crashed test run).  Returns the removed dir names."""
    base = Path(base_dir) if base_dir is not None else base_dir_default()
    removed: list[str] = []
    if not base.is_dir():
        return removed
    for path in sorted(base.iterdir()):
        if not path.is_dir() or _owner_alive(path):
            continue
        for pid in proctree.pids_with_cwd_under(str(path)):
            try:
                proctree.kill_tree(pid, timeout=KILL_TIMEOUT)
            except RuntimeError:
                pass
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


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


class ProcessNode(BrokerNode):
    """Common machinery: one broker process tree, a directory, a log file."""

    driver = "process"

    def __init__(self, name: str, base_dir: str | Path | None) -> None:
        super().__init__(name)
        self.dir = (Path(base_dir) if base_dir is not None else base_dir_default()) / name
        self._popen: subprocess.Popen[bytes] | None = None
        self._prepared = False

    @property
    def log_path(self) -> Path:
        return self.dir / "stdout.log"

    # -- hooks -----------------------------------------------------------
    def _prepare(self) -> None:
        """Create the node dir and its config (first start only)."""
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str] | None, str | None]:
        """argv, env (None = inherit), account to run as."""
        raise NotImplementedError

    def _before_start(self) -> None:
        """Runs before every start (e.g. make sure epmd is up)."""

    def _after_close(self) -> None:
        """Releases group resources (e.g. a private epmd)."""

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        if self._closed:
            raise NodeError(f"{self.describe()} is closed")
        if self.is_running():
            return
        if not self._prepared:
            make_dir(self.dir)
            write_owner(self.dir)
            self._prepare()
            self._prepared = True
        self._before_start()
        argv, env, account = self._command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== brokerstack: starting {argv[0]} at {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                env=env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session and process group: signals to us (Ctrl-C in
                # pytest) do not reach the broker, and kill() can target it.
                start_new_session=True,
                user=account,
                group=account,
            )

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def _root_pid(self) -> int | None:
        return self._popen.pid if self.is_running() and self._popen is not None else None

    def pid(self) -> int | None:
        root = self._root_pid()
        if root is None:
            return None
        return proctree.find_in_tree(root, _BROKER_COMMS[self.kind]) or root

    def kill(self) -> None:
        if self._popen is None:
            return
        if self._popen.poll() is None:
            try:
                proctree.kill_tree(self._popen.pid, timeout=KILL_TIMEOUT)
            except RuntimeError as exc:
                raise NodeError(f"{self.describe()}: {exc}") from exc
        self._popen.wait()

    def stop(self, timeout: float = 30) -> None:
        if self._popen is None or self._popen.poll() is not None:
            return
        tree = proctree.process_tree(self._popen.pid)
        # Only the top process: rabbitmq-server's script traps SIGTERM and
        # shuts the VM down cleanly; a group-wide signal would race with that.
        self._popen.send_signal(signal.SIGTERM)
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        # Helpers (erl_child_setup, inet_gethost) exit once the VM is gone.
        if proctree.wait_pids_gone(tree, timeout=5.0):
            proctree.signal_pids(tree, signal.SIGKILL)
            proctree.wait_pids_gone(tree, timeout=KILL_TIMEOUT)

    def logs(self, tail: int = 50) -> str:
        return _tail(self.log_path, tail)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        untrack(self)
        try:
            self.kill()  # data goes away anyway: no need for a clean stop
        finally:
            try:
                self._after_close()
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)


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


class ProcessSentinelGroup:
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

    def __enter__(self) -> ProcessSentinelGroup:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
