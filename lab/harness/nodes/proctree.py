"""Process trees read from /proc: who belongs to a broker, what it costs, and
killing all of it.

RabbitMQ is a tree (rabbitmq-server sh -> beam.smp -> erl_child_setup ->
inet_gethost ...), and erl_child_setup/inet_gethost call setsid(), so neither
the process group nor the session of the start script covers them: the tree
has to be found by parent pid.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    utime_ticks: int
    stime_ticks: int
    start_ticks: int


def read_stat(pid: int) -> ProcStat | None:
    """Parse /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: it ends at the *last* ')'.
    open_paren, close_paren = raw.index("("), raw.rindex(")")
    fields = raw[close_paren + 2 :].split()
    return ProcStat(
        pid=pid,
        comm=raw[open_paren + 1 : close_paren],
        state=fields[0],
        ppid=int(fields[1]),
        utime_ticks=int(fields[11]),
        stime_ticks=int(fields[12]),
        start_ticks=int(fields[19]),
    )


def all_stats() -> dict[int, ProcStat]:
    stats: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def _task_states(pid: int) -> list[str]:
    states: list[str] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return states
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                raw = fh.read()
        except OSError:
            continue
        states.append(raw[raw.rindex(")") + 2])
    return states


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie.

    A killed process whose parent has not reaped it yet (orphans wait for
    pid 1 here) is a zombie holding no memory, ports or files: dead for every
    purpose of the lab.  But a multi-threaded process (beam.smp) shows its
    leader as a zombie while the other threads are still exiting and still
    hold its sockets, so every thread must be a zombie.
    """
    stat = read_stat(pid)
    if stat is None:
        return False
    if stat.state not in ("Z", "X"):
        return True
    return any(state not in ("Z", "X") for state in _task_states(pid))


def process_tree(root: int) -> list[int]:
    """root and all its live descendants, root first."""
    stats = all_stats()
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        if stats[pid].state in ("Z", "X"):
            continue
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def find_in_tree(root: int, names: Iterable[str]) -> int | None:
    """First pid in root's tree whose comm is one of names."""
    wanted = set(names)
    for pid in process_tree(root):
        stat = read_stat(pid)
        if stat is not None and stat.comm in wanted:
            return pid
    return None


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE_SIZE
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError, ValueError):
        return 0


def tree_usage(root: int) -> dict[str, int | float]:
    """{"rss_bytes", "cpu_seconds"} summed over root's process tree (own CPU
    time of each live process; children that already exited are not counted)."""
    rss, ticks = 0, 0
    for pid in process_tree(root):
        stat = read_stat(pid)
        if stat is None:
            continue
        rss += rss_bytes(pid)
        ticks += stat.utime_ticks + stat.stime_ticks
    return {"rss_bytes": rss, "cpu_seconds": ticks / _CLOCK_TICKS}


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_pids_gone(pids: Iterable[int], timeout: float, poll: float = 0.02) -> list[int]:
    """Poll until none of pids is alive; returns those still alive at timeout."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [pid for pid in pending if pid_alive(pid)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(poll)


def kill_tree(root: int, timeout: float = 10.0) -> None:
    """SIGKILL root's whole tree (and its process group) and wait until dead.

    The tree is collected before the first signal: once a parent dies its
    children are reparented and can no longer be found from root.
    """
    pids = process_tree(root)
    try:
        os.killpg(root, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    signal_pids(pids, signal.SIGKILL)
    survivors = wait_pids_gone(pids, timeout)
    if survivors:
        raise RuntimeError(f"processes {survivors} of tree {root} survived SIGKILL for {timeout}s")


def start_ticks(pid: int) -> int | None:
    """Start time of pid in clock ticks since boot; with the pid it identifies
    a process even after the pid number is reused."""
    stat = read_stat(pid)
    return None if stat is None else stat.start_ticks


def pids_with_cwd_under(directory: str) -> list[int]:
    """Live processes whose working directory is inside directory.

    Process nodes are started with cwd = their node dir, and the broker's
    children inherit it, so this finds leftovers of a crashed owner without
    trusting pid numbers recorded earlier.
    """
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    found = []
    for pid in all_stats():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd + "/").startswith(prefix) and pid_alive(pid):
            found.append(pid)
    return found
