"""LazyFS mounts: a broker's data directory on a file system that can lose power.

    with LazyFSMount() as disk:        # mounted, empty
        ...                            # the broker keeps its data under disk.path
        disk.checkpoint()              # what a node up for a while has on disk by now
        disk.clear_cache()             # the power cut: every byte not fsynced is gone

``kill -9`` of a broker loses nothing it handed to the kernel: the page cache outlives the
process. LazyFS (../shared/lazyfs, a FUSE file system with its own page cache) drops on command
whatever was written and not fsynced, as a machine crash does. Each mount has its own directory:
``root/`` (where the bytes really are), ``mnt/`` (the mount point), its config, the fault FIFO and
LazyFS' log. ``close()`` unmounts and removes all of it.

The mount is made with ``allow_other``, so brokers running as other users (the process driver's
rabbitmq account, the containers' redis/rabbitmq users through a bind mount) can use it; a non-root
owner needs ``user_allow_other`` in /etc/fuse.conf (../shared/lazyfs/setup sets it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import proctree
from .base import NodeError, poll, track, untrack

#: Environment variable naming the lazyfs binary (else DEFAULT_BINARY, else lazyfs on PATH).
BINARY_ENV = "BROKERSTACK_LAZYFS"
#: Where ../shared/lazyfs/setup builds it.
DEFAULT_BINARY = "/var/cache/local-lazyfs/lazyfs/build/lazyfs"
FUSE_DEVICE = "/dev/fuse"
#: LazyFS' own page cache: unsynced data lives here until fsync or a checkpoint. Large enough that
#: nothing is evicted (eviction would write unsynced data through and hide losses).
CACHE_SIZE = "1gb"
#: Mounting takes ~0.1 s; a FIFO command on a 1 GB cache well under a second.
MOUNT_TIMEOUT = 30.0
COMMAND_TIMEOUT = 60.0
UNMOUNT_TIMEOUT = 15.0
#: rabbitmq.conf lines for a node whose data is on LazyFS: LazyFS implements no statfs, so the
#: free-disk check reads 0 bytes free, raises the disk alarm and blocks every publisher (a publish
#: with confirms waits for ever, one without is never read off the socket). A limit of 0 is never
#: undercut; the power-loss runs do not measure disk alarms.
RABBITMQ_CONFIG = "disk_free_limit.absolute = 0"
#: What LazyFS logs when a command is done (its log is flushed at every line).
DONE_LINES = {"lazyfs::cache-checkpoint": "checkpoint is done.", "lazyfs::clear-cache": "cache is cleared."}


class LazyFSUnavailable(NodeError):
    """LazyFS cannot run here (the message is the one-line reason)."""


def find_lazyfs() -> str | None:
    override = os.environ.get(BINARY_ENV)
    if override:
        return override
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return shutil.which("lazyfs")


def fusermount() -> str | None:
    return shutil.which("fusermount3") or shutil.which("fusermount")


def unavailable_reason() -> str | None:
    """Why a LazyFS mount cannot be made on this machine, in one line; None if it can."""
    if not os.path.exists(FUSE_DEVICE):
        return f"LazyFS needs FUSE and {FUSE_DEVICE} does not exist here (a container without --device /dev/fuse)"
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        return f"LazyFS needs FUSE and {FUSE_DEVICE} is not readable and writable by uid {os.geteuid()}"
    if find_lazyfs() is None:
        return f"the lazyfs binary is missing: run ../shared/lazyfs/setup or set {BINARY_ENV}"
    if fusermount() is None:
        return "fusermount3 is missing (Debian package fuse3): LazyFS mounts could not be removed"
    return None


def render_config(*, fifo: Path, log: Path, cache_size: str = CACHE_SIZE) -> str:
    """LazyFS' TOML config: one FIFO for commands, no eviction, a log flushed at every line."""
    return (
        "[faults]\n"
        f'fifo_path="{fifo}"\n'
        "[cache]\n"
        "apply_eviction=false\n"
        "[cache.simple]\n"
        f'custom_size="{cache_size}"\n'
        "blocks_per_page=1\n"
        "[filesystem]\n"
        "log_all_operations=false\n"
        f'logfile="{log}"\n'
    )


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts if len(line.split()) > 1)


class LazyFSMount:
    """One LazyFS mount in a fresh directory (under ``parent``, default the system's temp dir)."""

    def __init__(self, parent: str | Path | None = None, *, name: str = "lazyfs", cache_size: str = CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._parent = Path(parent) if parent is not None else None
        self._name = name
        self.dir: Path | None = None
        self._popen: subprocess.Popen[bytes] | None = None
        self._closed = False
        #: What happened, for the record: commands sent and how long each took.
        self.events: list[dict[str, object]] = []

    # -- paths -----------------------------------------------------------
    def _require(self) -> Path:
        if self.dir is None:
            raise NodeError("the LazyFS mount was not started")
        return self.dir

    @property
    def path(self) -> Path:
        """The mount point: what the broker sees as its disk."""
        return self._require() / "mnt"

    @property
    def root(self) -> Path:
        """Where the surviving bytes really are."""
        return self._require() / "root"

    @property
    def fifo(self) -> Path:
        return self._require() / "faults.fifo"

    @property
    def log_path(self) -> Path:
        return self._require() / "lazyfs.log"

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout: float = MOUNT_TIMEOUT) -> LazyFSMount:
        if self._closed:
            raise NodeError("the LazyFS mount is closed")
        if self._popen is not None:
            return self
        reason = unavailable_reason()
        if reason is not None:
            raise LazyFSUnavailable(reason)
        binary = find_lazyfs()
        assert binary is not None
        if self._parent is not None:
            self._parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self._name}-", dir=self._parent))
        track(self)
        # Brokers running as other users must reach the mount point through its parents.
        self.dir.chmod(0o755)
        for sub in (self.root, self.path):
            sub.mkdir()
            sub.chmod(0o777)
        config = self.dir / "lazyfs.toml"
        config.write_text(render_config(fifo=self.fifo, log=self.log_path, cache_size=self.cache_size))
        # Relative to cwd (self.dir): LazyFS ignores a --config-path that contains "-o" in any case
        # (it takes it for a FUSE option) and aborts on its default, and mkdtemp names can.
        argv = [binary, str(self.path), "--config-path", config.name, "-o", "allow_other"]
        argv += ["-o", "modules=subdir", "-o", f"subdir={self.root}", "-f"]
        with open(self.dir / "stdout.log", "ab") as out:
            self._popen = subprocess.Popen(
                argv,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def mounted() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                raise NodeError(
                    f"lazyfs exited with {self._popen.returncode} before mounting\n{self.logs()}\n{self._output()}"
                )
            return is_mounted(self.path) and self.fifo.exists() and self._fifo_has_reader()

        poll(mounted, timeout, 0.05, f"LazyFS mount at {self.path}", on_timeout=self.logs)
        return self

    def _fifo_has_reader(self) -> bool:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: nobody reads it yet
            return False
        os.close(fd)
        return True

    def is_running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def close(self) -> None:
        """Unmount, stop LazyFS and remove every file of the mount; safe to call twice. Whatever
        still uses the mount (a broker) must be stopped first: a busy mount is detached lazily."""
        if self._closed:
            return
        self._closed = True
        untrack(self)
        try:
            if self.dir is not None and is_mounted(self.path):
                tool = fusermount() or "fusermount3"
                done = subprocess.run([tool, "-u", str(self.path)], capture_output=True, timeout=UNMOUNT_TIMEOUT)
                if done.returncode != 0:
                    subprocess.run([tool, "-u", "-z", str(self.path)], capture_output=True, timeout=UNMOUNT_TIMEOUT)
        finally:
            if self._popen is not None:
                try:
                    self._popen.wait(UNMOUNT_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proctree.kill_tree(self._popen.pid, timeout=UNMOUNT_TIMEOUT)
                    self._popen.wait()
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LazyFSMount:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- commands --------------------------------------------------------
    def checkpoint(self, timeout: float = COMMAND_TIMEOUT) -> float:
        """Write everything cached through to the root dir (no fsync): a node that has been up a
        while has its boot files on disk. Returns the seconds it took."""
        return self.command("lazyfs::cache-checkpoint", timeout)

    def clear_cache(self, timeout: float = COMMAND_TIMEOUT) -> float:
        """The power cut: every byte written and not fsynced is dropped. Returns the seconds it took."""
        return self.command("lazyfs::clear-cache", timeout)

    def command(self, command: str, timeout: float = COMMAND_TIMEOUT) -> float:
        """Send a command on the FIFO and wait until LazyFS logs it done (commands are run one at
        a time by one thread: the next is sent only when this one is over)."""
        if not self.is_running():
            raise NodeError(f"LazyFS at {self.dir} is not running; cannot send {command}")
        done_line = DONE_LINES[command]
        before = self._count(done_line)
        started = time.monotonic()
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, f"{command}\n".encode())
        finally:
            os.close(fd)
        poll(
            lambda: self._count(done_line) > before,
            timeout,
            0.01,
            f"LazyFS {command}",
            on_timeout=self.logs,
        )
        took = time.monotonic() - started
        self.events.append({"command": command, "at": time.time(), "took_s": round(took, 3)})
        return took

    def _count(self, line: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(line)
        except FileNotFoundError:
            return 0

    def _output(self, tail: int = 20) -> str:
        """The last lines lazyfs printed (where it says why it would not mount)."""
        try:
            lines = (self._require() / "stdout.log").read_text(errors="replace").splitlines()
        except (FileNotFoundError, NodeError):
            return "(no lazyfs output)"
        return f"--- last {min(tail, len(lines))} lines lazyfs printed ---\n" + "\n".join(lines[-tail:])

    def logs(self, tail: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (FileNotFoundError, NodeError):
            return "(no LazyFS log)"
        return f"--- last {min(tail, len(lines))} lines of the LazyFS log ---\n" + "\n".join(lines[-tail:])

    def __repr__(self) -> str:
        return f"<LazyFSMount {self.dir}>"
