"""ManagedProcess.start() under a stop signal: a SIGTERM that lands while the child is being
created (the lab turns it into an exception, lab.harness.interrupts) must not leave a child that
nothing holds, since the child runs in a session of its own that no group kill reaches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.harness import processes
from lab.harness.interrupts import sigterm_raises
from lab.harness.processes import ManagedProcess


class Stopped(KeyboardInterrupt):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0: it counts as gone once reaped or exited.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_a_sigterm_while_the_child_is_created_leaves_no_orphan(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    created: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_hit_by_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        # The child exists, Popen has not returned yet: where CPython reads the exec status pipe.
        child = real_popen(*args, **kwargs)
        created.append(child)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0)  # the handler runs between two bytecodes, here if nothing defers it
        return child

    monkeypatch.setattr(processes.subprocess, "Popen", popen_hit_by_sigterm)
    managed = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], {}, tmp_path)
    try:
        with pytest.raises(Stopped), sigterm_raises(Stopped):
            managed.start()
        [child] = created
        assert managed.pid == child.pid  # held: close() can stop it
        managed.close()
        assert not _alive(child.pid)
    finally:
        for child in created:  # what a failing run would otherwise leave behind
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(10)


def test_a_sigterm_outside_start_still_reaches_its_handler(tmp_path: Path) -> None:
    managed = ManagedProcess("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], {}, tmp_path)
    with managed, pytest.raises(Stopped), sigterm_raises(Stopped):
        assert managed.pid is not None
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted at once by the handler
    assert not managed.is_running()
