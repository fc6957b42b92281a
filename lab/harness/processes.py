"""Real ``celery worker`` and API processes that tests and the chaos runner start, kill and stop.

Each runs in a session of its own so ``kill()`` takes down the whole process tree (a prefork
worker's children included), the way a crashed container or OOM-killed pod goes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import httpx

from lab.harness.nodes.ports import free_port
from services.api.http import IMPORT_PATH as NODELAY_HTTP
from worker.topology import WORK_QUEUES

#: Environment a child inherits from this process besides the settings it is given.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


class ProcessError(RuntimeError):
    """A managed process did not start, or did not do what was waited for in time."""


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to their handlers.

    The lab turns SIGTERM into an exception (lab.harness.interrupts). Raised inside Popen after
    the fork, it would leave a child that nothing holds and no group kill reaches (it has a
    session of its own); held until ``_proc`` is set, the run's cleanup stops the child. Only the
    main thread runs Python signal handlers, so elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    # A handler not installed from Python (getsignal() is None) could not be put back: leave it.
    held = [sig for sig in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(sig) is not None]
    previous = {sig: signal.signal(sig, hold) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


class ManagedProcess:
    """A child process with its output in a log file, stopped for sure on close()."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ} | dict(env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="brokerstack-proc-"))
        self.log_path = self.log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.is_running():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log, _signals_deferred():
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def stop(self, timeout: float = 30) -> None:
        """Graceful: SIGTERM (Celery's warm shutdown lets running tasks finish), then SIGKILL."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        self._signal_group(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap()

    def terminate(self, timeout: float = 60) -> float | None:
        """Stop the way an orchestrator does (``docker stop``, a pod's deletion, systemd): SIGTERM to
        the main process alone, whose own shutdown stops its children (signalling the group would
        kill a prefork worker's busy pool processes from under its warm shutdown), then wait for it
        to exit by itself. Returns the seconds it took; None if it was still running after
        ``timeout``, when it is killed."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return None
        started = time.monotonic()
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        took = time.monotonic() - started
        self._reap()
        return took

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process has exited, or None if it still runs after ``timeout``."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole process tree, no chance to clean up."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._proc.wait(10)
        self._reap()

    def close(self) -> None:
        self.stop(timeout=15)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- logs -------------------------------------------------------------------------------------

    def logs(self, since_start: bool = True) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset if since_start else 0)
            return log.read().decode(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait until the output since the last start matches ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        match = self.wait_until(lambda: regex.search(self.logs()), timeout, f"log line /{pattern}/")
        assert isinstance(match, re.Match)
        return match

    def wait_until(self, condition: Callable[[], object], timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if not self.is_running():
                raise ProcessError(f"{self.name} exited ({self.returncode}) before {what}:\n{self._tail()}")
            if time.monotonic() > deadline:
                raise ProcessError(f"{self.name}: no {what} after {timeout:g} s:\n{self._tail()}")
            time.sleep(0.05)

    def _tail(self, lines: int = 30) -> str:
        return "\n".join(self.logs(since_start=False).splitlines()[-lines:])

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        # Children of the group that outlived the leader (prefork pool processes) die with it.
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


class CeleryWorker(ManagedProcess):
    """``celery -A worker.celery_app worker`` for the settings in ``env``."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        queues: Sequence[str] = WORK_QUEUES,
        pool: str = "solo",
        concurrency: int = 1,
        name: str | None = None,
        loglevel: str = "INFO",
        log_dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.hostname = f"{name or 'worker'}-{uuid.uuid4().hex[:6]}@localhost"
        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "worker",
            "--hostname",
            self.hostname,
            "--queues",
            ",".join(queues),
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
            *extra_args,
        ]
        super().__init__(self.hostname.split("@")[0], argv, env, log_dir)
        self.queues = tuple(queues)

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_for_log(re.escape(self.hostname) + r" ready\.", timeout)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()


class ApiServer(ManagedProcess):
    """The producer API under uvicorn, on a free localhost port."""

    def __init__(
        self, env: Mapping[str, str], *, port: int | None = None, log_dir: Path | None = None, workers: int = 1
    ) -> None:
        self.port = port or free_port()
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--http",
            NODELAY_HTTP,  # Nagle off, also with --workers
        ]
        super().__init__(f"api-{self.port}", argv, env, log_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        def answers() -> bool:
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(answers, timeout, "answer on /healthz")
