"""Running one scenario on one setup: the shared skeleton, cleanup, drain, accounting, record.

    from lab.experiments.chaos import RunOptions, run_scenario

    record = run_scenario("broker-kill", "rabbitmq-confirms", RunOptions(tasks=300, kills=3))
    record.counts.lost, record.counts.duplicated, record.path

Every run starts what it needs by itself (broker nodes through lab.harness.nodes' drivers, a Redis for
results and the execution ledger, ``celery worker`` processes, the API) and stops all of it in a
``finally``, on success, failure, Ctrl-C and SIGTERM alike. The record is written in every case
(``status`` says how the run ended).
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import shutil
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from lab.experiments.chaos.ledger import (
    ExecutionLog,
    MemoryExecutionLog,
    ProducerLedger,
    account,
    committed_effects,
    pending_counts,
    save_history,
)
from lab.experiments.chaos.record import RunRecord, package_versions, results_dir, write_record
from lab.harness.interrupts import no_interrupts, sigterm_raises
from lab.harness.nodes import resolve_driver
from lab.harness.nodes.factory import DriverChoice
from lab.harness.setups import (
    DEFAULT_TRANSPORT,
    GUARANTEE_EXACTLY_ONCE,
    GUARANTEE_NO_LOSS,
    TRANSPORTS,
    Setup,
    get_setup,
)
from lab.harness.stacks import Stack
from worker.settings import Settings

log = logging.getLogger(__name__)

#: The broker must have been quiet this long (no new ledger entry) before "empty" is believed.
DRAIN_SETTLE = 2.0
#: Task ids as they appear in Redis' AOF: the runner's own (chaos-<run>-<n>) and Celery's UUIDs
#: (the API chooses those).
TASK_ID_IN_AOF = re.compile(rb"chaos-[0-9a-f]{8}-[0-9-]+|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: Seconds between progress callbacks while waiting.
PROGRESS_INTERVAL = 0.2
POLL_INTERVAL = 0.1
#: Redis: the visibility timeout must exceed a run's longest task by this much (a task may wait in
#: the worker's prefetch window before it starts).
VISIBILITY_MARGIN = 3.0
#: A soak's "lost so far": an acknowledged task counts once it has not run this long after its
#: redelivery could have happened (provisional; the record counts after the drain).
PROVISIONAL_LOST_SLACK = 30.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|h|m|s)?", re.IGNORECASE)
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_duration(text: str) -> float:
    """Seconds in ``20m``, ``90s``, ``1h``, ``1h30m`` or a plain number of seconds."""
    value = text.strip()
    total, position = 0.0, 0
    for match in _DURATION.finditer(value):
        if match.start() != position or (match.group(2) is None and match.end() != len(value)):
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2) and match.group(2).lower()]
        position = match.end()
        while position < len(value) and value[position] == " ":
            position += 1
    if not value or position != len(value):
        raise ValueError(f"not a duration: {text!r} (write e.g. 20m, 90s, 1h, 1h30m)")
    if total <= 0:
        raise ValueError(f"a duration must be more than 0: {text!r}")
    return total


@dataclass(frozen=True)
class RunOptions:
    """Parameters of a run. ``None`` means: the scenario's default."""

    #: Enqueue attempts in the whole run (publish-kill: split over its rounds).
    tasks: int = 1000
    #: Faults injected: broker kills/stops, worker kills, outages, node kills, publish-kill rounds.
    kills: int = 3
    #: Seeds where in the stream each fault lands (and victim choices); random if None, recorded.
    seed: int | None = None
    #: Enqueue attempts per second (0: as fast as the producer goes; None: chosen so that the
    #: load spans all the faults, see Scenario.auto_rate).
    rate: float | None = None
    #: Publishing threads of the Celery producer (one publish at a time each).
    producers: int = 2
    workers: int = 2
    pool: str | None = None
    concurrency: int | None = None
    #: Seconds a killed broker stays down before it is started again.
    down_seconds: float | None = None
    #: Redis: REDIS_VISIBILITY_TIMEOUT for the run, and the restore sweep's interval and throttle.
    visibility_timeout: int = 10
    restore_interval: float = 1.0
    restore_throttle: int = 1
    #: worker-kill: how long the tasks that get killed run, and what is killed:
    #: "worker" (the whole process tree), "child" (the pool process running the task) or "both".
    long_task_seconds: float = 3.0
    kill_target: str = "worker"
    #: producer-outage: concurrent API clients.
    clients: int = 4
    publish_timeout: float = 4.0
    #: publish-kill: seconds between the last publish returning and the kill.
    kill_after: float = 0.2
    #: Redis: which transport carries the messages (REDIS_TRANSPORT). Ignored on RabbitMQ.
    transport: str = DEFAULT_TRANSPORT
    #: Soak: inject faults at random intervals until this many seconds have passed (``tasks``
    #: and ``kills`` then do not apply); None: K faults in N tasks.
    duration: float | None = None
    #: Soak: mean seconds between two faults (each gap drawn from 0.5x..1.5x of it, seeded).
    fault_interval: float = 8.0
    #: Upper bound on draining after the load ends.
    drain_timeout: float = 300.0
    driver: str | None = None
    #: Keep the run directory (worker/API logs, the whole history as SQLite) after a completed
    #: run; a failed or interrupted run always keeps it.
    keep_workdir: bool = True

    def __post_init__(self) -> None:
        if self.tasks < 1:
            raise ValueError("tasks must be at least 1")
        if self.kills < 0:
            raise ValueError("kills must be 0 or more")
        if self.kill_target not in ("worker", "child", "both"):
            raise ValueError("kill_target must be worker, child or both")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, not {self.transport!r}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be more than 0 seconds")
        if self.fault_interval <= 0:
            raise ValueError("fault_interval must be more than 0 seconds")


@dataclass(frozen=True)
class Progress:
    """What a run is doing, for progress bars. ``executed`` counts acknowledged ids executed."""

    scenario: str
    setup: str
    phase: str  # starting | load | fault | drain | counting | done
    message: str
    attempted: int
    acknowledged: int
    executed: int
    total: int
    faults_done: int
    faults_total: int
    #: Soak: seconds since the run started and the planned duration (None for a fixed run).
    elapsed_s: float = 0.0
    duration_s: float | None = None
    #: Soak: acknowledged tasks overdue (provisionally lost) and task ids run twice so far.
    lost_so_far: int | None = None
    duplicated_so_far: int | None = None


ProgressCallback = Callable[[Progress], None]


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM during a run (raised like Ctrl-C so every cleanup path runs)."""


class ChaosRun:
    """One scenario on one setup. ``run()`` once; ``close()`` any number of times."""

    def __init__(
        self,
        scenario: str,
        setup: str | Setup,
        options: RunOptions | None = None,
        *,
        progress: ProgressCallback | None = None,
        results: str | Path | None = None,
    ) -> None:
        from lab.experiments.chaos.scenarios import SCENARIOS, get_scenario

        self.scenario = get_scenario(scenario)
        self.setup = get_setup(setup) if isinstance(setup, str) else setup
        if not self.setup.applies_to(self.scenario.name):
            raise ValueError(
                f"scenario {self.scenario.name} does not apply to setup {self.setup.name} "
                f"(it runs: {', '.join(self.setup.scenarios)})"
            )
        self.options = self.scenario.resolve(options or RunOptions())
        self.rate_auto = self.options.rate is None
        if self.rate_auto:
            self.options = replace(self.options, rate=round(self.scenario.auto_rate(self.setup, self.options), 1))
        if self.options.duration is not None and not self.scenario.soak:
            soaks = ", ".join(name for name, s in SCENARIOS.items() if s.soak)
            raise ValueError(f"scenario {self.scenario.name} has no soak mode (--duration); these do: {soaks}")
        self.transport = self.setup.transport_for(self.options.transport)
        longest = self.scenario.longest_task(self.options)
        if (
            longest
            and self.setup.vendor.unacked_redelivery_delay(self.options) is not None
            and (self.options.visibility_timeout < longest + VISIBILITY_MARGIN)
        ):
            raise ValueError(
                f"{self.scenario.name} runs tasks of up to {longest:g} s: a visibility timeout of "
                f"{self.options.visibility_timeout} s would hand them out again while they run (set at least "
                f"{longest + VISIBILITY_MARGIN:g})"
            )
        self.progress_callback = progress
        self.results_dir = results_dir(results)
        self.run_id = secrets.token_hex(4)
        self.seed = self.options.seed if self.options.seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.driver = resolve_driver(cast("DriverChoice | None", self.options.driver))
        self.workdir = self.results_dir / "tmp" / "chaos" / self.run_id
        self.stack = Stack(self.setup, self.driver, self.workdir, cluster=self.scenario.cluster)
        self.ledger = ProducerLedger()
        self.executions: ExecutionLog | MemoryExecutionLog = MemoryExecutionLog()
        self.record = RunRecord(
            scenario=self.scenario.name,
            setup=self.setup.name,
            run_id=self.run_id,
            started_at=_utc_now(),
            driver=self.driver,
            parameters={},
            workdir=self.workdir,
            transport=self.transport,
        )
        self.faults_done = 0
        self.faults_total = self.scenario.faults_planned(self.options)
        self._last_progress = 0.0
        self._ran = False
        self._closed = False
        self._t0 = time.monotonic()
        self.t0_wall = time.time()
        self._phase = "starting"
        self.timings: dict[str, Any] = {}
        self._watched_exits: set[int] = set()
        self._loads: list[Any] = []
        #: Soak: set when Ctrl-C/SIGTERM ended the fault loop early (the run then drains and counts).
        self.stopped_early = False
        self._overdue_cursor = 0
        self._overdue: set[str] = set()

    # --- running ---------------------------------------------------------------------------------

    def run(self) -> RunRecord:
        if self._ran:
            raise RuntimeError("a ChaosRun runs once; make a new one")
        self._ran = True
        record = self.record
        record.versions = package_versions()
        record.parameters = self._parameters()
        record.guarantee = self.setup.guarantee_for(self.scenario.name, self.transport)
        if self.transport is None and self.options.transport != DEFAULT_TRANSPORT:
            self.note(
                f"--transport {self.options.transport} does not apply to {self.setup.name}: its broker "
                f"({self.setup.broker}) has one client transport either way"
            )
        with sigterm_raises(RunInterrupted):
            try:
                self.emit("starting", f"{self.scenario.name} on {self.setup.name} ({self.driver})", force=True)
                self.scenario.run(self)
                self.emit("counting", "counting", force=True)
                self._count()
                record.status = "completed"
            except KeyboardInterrupt:
                record.status = "interrupted"
                record.error = "interrupted (Ctrl-C or SIGTERM)"
                with no_interrupts():
                    self._count_interrupted()
                raise
            except BaseException as exc:
                record.status = "failed"
                record.error = f"{type(exc).__name__}: {exc}"
                record.details["traceback"] = traceback.format_exc(limit=8)
                raise
            finally:
                with no_interrupts():
                    self._finish()
        self.emit("done", "done", force=True)
        return record

    def _count(self) -> None:
        self.executions.poll_all()
        counts = account(self.ledger.attempts(), self.executions.entries, outbox=committed_effects(self.stack.settings))
        self.record.counts = counts
        self._check_aof()
        if self.record.guarantee == GUARANTEE_NO_LOSS:
            self.record.guarantee_held = counts.lost == 0
        elif self.record.guarantee == GUARANTEE_EXACTLY_ONCE:
            self.record.guarantee_held = counts.lost == 0 and counts.duplicated == 0
        if counts.unexpected:
            self.note(f"{counts.unexpected} executed task ids were never attempted")

    def _count_interrupted(self) -> None:
        """What was counted before an interrupt, kept in the record (not drained: ``lost`` then
        includes tasks that had simply not run yet; ``status`` says so)."""
        try:
            self.executions.poll_all()
            self.record.counts = account(
                self.ledger.attempts(), self.executions.entries, outbox=committed_effects(self.stack.settings)
            )
            self.note(
                "interrupted before the drain: the counts are what had happened so far, and lost "
                "includes tasks that had not run yet"
            )
        except Exception as exc:  # noqa: BLE001 - the ledger node may be what failed
            self.note(f"could not count after the interrupt: {exc!r}")

    def _check_aof(self) -> dict[str, Any] | None:
        """Redis with AOF, as evidence beside the counts: which acknowledged task ids Redis never
        wrote, and whether lost ones were written (then a consumer took them and dropped them)."""
        try:
            aof = self.stack.persisted_log()
        except Exception as exc:  # noqa: BLE001 - the check is extra evidence, not the count
            self.note(f"could not read the AOF: {exc!r}")
            return None
        if aof is None:
            return None
        stored = {m.decode() for m in TASK_ID_IN_AOF.findall(aof)}
        acked = self.ledger.acknowledged_ids()
        lost = acked - set(self.executions.finished)
        details = {
            "aof_bytes": len(aof),
            "acknowledged_not_in_aof": len(acked - stored),
            "lost_in_aof": len(lost & stored),
            "lost_not_in_aof": len(lost - stored),
        }
        self.record.details["aof"] = details
        if details["lost_in_aof"]:
            self.note(
                f"{details['lost_in_aof']} lost task(s) are in Redis' AOF: Redis stored them and handed "
                "them out, and they never ran"
            )
        return details

    def _finish(self) -> None:
        record = self.record
        try:
            self.executions.poll_all()
        except Exception as exc:  # noqa: BLE001 - the ledger node may be what failed
            self.note(f"could not read the execution ledger at the end: {exc!r}")
        self.close()
        record.finished_at = _utc_now()
        record.duration_s = round(time.monotonic() - self._t0, 2)
        self.timings["total_s"] = record.duration_s
        record.timings = _rounded(self.timings)
        if self.options.keep_workdir or record.status != "completed":
            try:
                save_history(self.workdir / "history.sqlite", self.ledger.attempts(), self.executions.entries)
                record.details["history"] = str(self.workdir / "history.sqlite")
            except Exception as exc:  # noqa: BLE001
                self.note(f"could not save the history: {exc!r}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
            record.workdir = None
        try:
            write_record(record, self.results_dir)
        except Exception as exc:  # noqa: BLE001
            log.error("could not write the record: %r", exc)

    def close(self) -> None:
        """Stop everything the run started; safe to call again, and from a failure path."""
        if self._closed:
            return
        self._closed = True
        for load in self._loads:
            try:
                load.stop(timeout=10)
            except Exception:  # noqa: BLE001
                pass
        self.stack.close(on_error=lambda what, exc: self.note(f"closing {what} failed: {exc!r}"))
        try:
            self.executions.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def settings(self) -> Settings:
        """The stack's settings (once the scenario made them)."""
        assert self.stack.settings is not None, "make the stack's settings first"
        return self.stack.settings

    @property
    def rate(self) -> float:
        """The publish rate, resolved (0: as fast as the producer goes)."""
        return self.options.rate or 0.0

    # --- helpers the scenarios use ---------------------------------------------------------------

    def register_load(self, load: Any) -> None:
        """A producer the cleanup must stop (it has ``stop(timeout)``)."""
        self._loads.append(load)

    def settings_overrides(self) -> dict[str, Any]:
        o = self.options
        values: dict[str, Any] = {"publish_timeout": o.publish_timeout}
        if self.stack.aux is not None:
            values.update(ledger_url=self.stack.aux.url, ledger_run=self.run_id)
        values.update(self.setup.vendor.run_settings(o, self.transport))
        return values

    def open_execution_log(self) -> None:
        assert self.stack.aux is not None
        self.executions = ExecutionLog(self.stack.aux.url, self.run_id)

    def note(self, message: str) -> None:
        log.info("%s/%s: %s", self.scenario.name, self.setup.name, message)
        self.record.notes.append(message)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def emit(self, phase: str, message: str = "", *, force: bool = False) -> None:
        self._phase = phase
        now = time.monotonic()
        if self.progress_callback is None or (not force and now - self._last_progress < PROGRESS_INTERVAL):
            return
        self._last_progress = now
        acked, executed = pending_counts(self.ledger.attempts(), self.executions.finished)
        soak = self.options.duration is not None
        self.progress_callback(
            Progress(
                scenario=self.scenario.name,
                setup=self.setup.name,
                phase=phase,
                message=message,
                attempted=self.ledger.attempted,
                acknowledged=acked,
                executed=executed,
                total=self.options.tasks,
                faults_done=self.faults_done,
                faults_total=self.faults_total,
                elapsed_s=self.elapsed(),
                duration_s=self.options.duration,
                lost_so_far=self.overdue() if soak else None,
                duplicated_so_far=getattr(self.executions, "duplicated", 0) if soak else None,
            )
        )

    def redelivery_bound(self) -> float:
        """Longest a delivered-but-unacked message may take to run again after its worker died."""
        return self.setup.vendor.redelivery_delay(self.options) + self.options.long_task_seconds

    def overdue(self) -> int:
        """Acknowledged tasks not run though their redelivery bound (plus slack) has passed: the
        soak's "lost so far". Incremental: each attempt is looked at once when it becomes due, and
        the overdue ones again until they run."""
        horizon = time.time() - self.redelivery_bound() - PROVISIONAL_LOST_SLACK
        attempts = self.ledger.attempts()
        finished = self.executions.finished
        while self._overdue_cursor < len(attempts):
            attempt = attempts[self._overdue_cursor]
            if attempt.outcome == "pending" or (attempt.completed_at or 0) > horizon:
                break
            if attempt.acknowledged and attempt.task_id is not None and not finished.get(attempt.task_id):
                self._overdue.add(attempt.task_id)
            self._overdue_cursor += 1
        self._overdue = {task_id for task_id in self._overdue if not finished.get(task_id)}
        return len(self._overdue)

    def tick(self, phase: str | None = None, message: str = "") -> None:
        """Read new ledger entries, watch the workers, report progress."""
        self.executions.poll()
        self._watch_workers()
        self.emit(phase or self._phase, message)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str, *, phase: str | None = None) -> Any:
        """Poll ``condition`` (after reading new ledger entries) until truthy; None at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.tick(phase, what)
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_INTERVAL)

    def pause(self, seconds: float, what: str) -> None:
        """Let ``seconds`` pass on purpose (a broker kept down), still reading the ledger."""
        self.wait_until(lambda: False, seconds, what)

    def fault_points(self, count: int | None = None) -> list[int]:
        """Attempt counts at which the faults happen: evenly spread, jittered by the seed."""
        count = self.options.kills if count is None else count
        total = self.options.tasks
        if count <= 0:
            return []
        segment = total / (count + 1)
        points = []
        for i in range(1, count + 1):
            jitter = self.rng.uniform(-segment / 4, segment / 4)
            points.append(max(1, min(total - 1, round(i * segment + jitter))))
        return sorted(points)

    def _watch_workers(self) -> None:
        for worker in self.stack.workers:
            if worker.pid in self._watched_exits or worker.is_running() or worker.pid is None:
                continue
            self._watched_exits.add(worker.pid)
            self.note(f"worker {worker.hostname} exited by itself with code {worker.returncode}")

    # --- draining --------------------------------------------------------------------------------

    def drain(self) -> None:
        """Wait until the broker holds nothing more and the ledger is quiet, bounded by a deadline."""
        o = self.options
        started = time.time()
        deadline = time.monotonic() + o.drain_timeout
        idle_limit = self.setup.vendor.drain_idle_limit(o)
        pending: int | None = None
        last_check = 0.0
        drained = False
        while True:
            self.tick("drain", "draining")
            now = time.time()
            quiet = now - max(self.executions.last_event_at, started - DRAIN_SETTLE)
            if quiet >= DRAIN_SETTLE and time.monotonic() - last_check >= 1.0:
                try:
                    pending = self.stack.pending_messages()
                except Exception as exc:  # noqa: BLE001 - broker still recovering: try again
                    pending = None
                    log.debug("pending check failed: %r", exc)
                last_check = time.monotonic()
                if pending == 0:
                    # Entries written between the last poll and the check.
                    self.executions.poll_all()
                    drained = True
                    break
            if time.monotonic() >= deadline or quiet >= idle_limit:
                break
            time.sleep(POLL_INTERVAL)
        self.record.drained = drained
        self.timings["drain_s"] = time.time() - started
        self.record.details["pending_at_end"] = pending
        if not drained:
            self.note(
                f"not drained: {pending} message(s) still in the broker after "
                f"{time.time() - started:.0f} s (counts taken anyway)"
            )
        try:
            dead_lettered = self.stack.dead_lettered()
        except Exception:  # noqa: BLE001 - extra evidence, not the count
            dead_lettered = None
        if dead_lettered is not None:
            self.record.details["dead_lettered"] = dead_lettered

    # --- the record ------------------------------------------------------------------------------

    def _parameters(self) -> dict[str, Any]:
        params = asdict(self.options)
        params.pop("keep_workdir", None)
        params["seed"] = self.seed
        params["rate_auto"] = self.rate_auto
        params["driver"] = self.driver
        setup = self.setup.describe()
        params["setup"] = {k: setup[k] for k in ("broker", "redis", "settings", "cluster_size")}
        for key in self.setup.vendor.ignored_run_parameters:
            params.pop(key, None)
        if params["duration"] is None:
            params.pop("fault_interval", None)
        return params


def run_scenario(
    scenario: str,
    setup: str | Setup,
    options: RunOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    results: str | Path | None = None,
) -> RunRecord:
    """Run ``scenario`` on ``setup`` and return its record (also written under the results dir)."""
    return ChaosRun(scenario, setup, options, progress=progress, results=results).run()


def summarize(values: list[float | None]) -> dict[str, Any] | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {
        "min": min(present),
        "max": max(present),
        "mean": statistics.fmean(present),
        "n": len(present),
        "missing": len(values) - len(present),
    }


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


__all__ = [
    "ChaosRun",
    "Progress",
    "ProgressCallback",
    "RunInterrupted",
    "RunOptions",
    "parse_duration",
    "run_scenario",
    "summarize",
]
