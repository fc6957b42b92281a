"""Process driver: brokers run as local processes from the distribution's
packages, each in its own directory.  The generic process lifecycle is here;
each broker's node class (its binary, config, environment) is in
lab.harness.vendors.<broker>.nodes.

Layout: <base_dir>/<node name>/ holds the node's config, data and log
(stdout.log); a RabbitCluster puts its nodes and their shared Erlang HOME in
<base_dir>/<cluster name>/.  Every process is started with cwd inside its
directory, which is how remove_stale_process_nodes() finds leftovers.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

from . import proctree
from .base import BrokerKind, BrokerNode, NodeError, moved_names, untrack

#: Parent of all process-node directories (override: BROKERSTACK_NODES_DIR).
DEFAULT_BASE_DIR = "/tmp/brokerstack-nodes"

#: File in a node/cluster dir naming the process that owns it ("pid starttime").
OWNER_FILE = "owner"

#: How long a process-node kill may take before the survivors are reported.
KILL_TIMEOUT = 15.0

#: Dirs without an owner file younger than this may still be being created.
_OWNERLESS_GRACE_SECONDS = 60.0


def base_dir_default() -> Path:
    return Path(os.environ.get("BROKERSTACK_NODES_DIR", DEFAULT_BASE_DIR))


def process_available(kind: BrokerKind) -> bool:
    """True if the process driver can run kind on this machine."""
    from lab.harness.vendors import vendor_for

    return vendor_for(kind).process_available()


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
        return self._broker_pid(self._root_pid())

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


#: Names that moved to the vendor packages, still importable from here for importers that have not
#: switched yet (the RabbitMQ cluster and the Sentinel group, now in their vendors, have; the unit
#: tests still take _is_wrapper from here).
_MOVED = {
    "ProcessRedisNode": "lab.harness.vendors.redis.nodes",
    "ProcessSentinelNode": "lab.harness.vendors.redis.nodes",
    "ProcessSentinelGroup": "lab.harness.vendors.redis.nodes",
    "find_redis_server": "lab.harness.vendors.redis.nodes",
    "ProcessRabbitNode": "lab.harness.vendors.rabbitmq.nodes",
    "Epmd": "lab.harness.vendors.rabbitmq.nodes",
    "make_erlang_home": "lab.harness.vendors.rabbitmq.nodes",
    "find_rabbitmq_server": "lab.harness.vendors.rabbitmq.nodes",
    "find_epmd": "lab.harness.vendors.rabbitmq.nodes",
    "_is_wrapper": "lab.harness.vendors.rabbitmq.nodes",
}

__getattr__ = moved_names(__name__, _MOVED)
