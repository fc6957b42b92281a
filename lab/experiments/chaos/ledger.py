"""The ledger of a chaos run, kept outside the broker under test, and its accounting.

Two halves:

* the **producer side** (:class:`ProducerLedger`, in the runner's memory, saved to SQLite at the
  end): every enqueue attempt, invoked before the publish, completed as ``ok`` (the producer got
  its acknowledgement: a publisher confirm, a Redis reply, an HTTP 202) or ``fail`` (an error or a
  non-202 answer: the task may or may not have been stored);
* the **execution side** (:class:`ExecutionLog`): every task start and finish, appended by the
  workers themselves (``worker.ledger``) to a list in a Redis node that is never killed.

:func:`account` counts them the way Jepsen's queue checker does. It is pure: unit tests feed it
hand-made histories.
"""

from __future__ import annotations

import json
import math
import sqlite3
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from worker.settings import Settings

Outcome = Literal["pending", "ok", "fail"]
#: Attempt kinds the chaos load gives the tasks it sends with the exactly-once guarantee.
GUARDED_KINDS = frozenset({"guarded", "api-guarded"})
EventName = Literal["start", "finish", "abort", "effect"]


@dataclass
class Attempt:
    """One enqueue attempt. ``task_id`` is None when the producer cannot choose the id (the API
    picks it) and no acknowledgement told it; such attempts are anonymous."""

    index: int
    task_id: str | None
    invoked_at: float
    outcome: Outcome = "pending"
    completed_at: float | None = None
    error: str | None = None
    kind: str = "task"
    #: When the task is due (epoch seconds): a countdown/ETA task's due time, None for one due at once.
    due_at: float | None = None

    @property
    def acknowledged(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class Execution:
    """One entry the workers wrote: a task ``start`` or ``finish``, or an ``abort``: a run that
    ended without an outcome because the worker terminated it (Celery cancels a running acks_late
    task when its connection is lost, so it runs again from the requeued message). An aborted run
    is not an execution: it neither counts as one nor makes the next one a duplicate. An ``effect``
    is written by a task with the effectively-once guarantee (``worker.idempotent``) when its effect
    was committed, which happens once per task id however often it ran."""

    event: EventName
    task_id: str
    worker: str = ""
    pid: int = 0
    attempt: int = 0
    redelivered: bool = False
    t: float = 0.0
    state: str | None = None
    name: str = ""

    @classmethod
    def from_json(cls, raw: str | bytes) -> Execution:
        data = json.loads(raw)
        event = data["event"]
        # The worker writes every finish with the task's state; a terminated run has none.
        if event == "finish" and "state" in data and data["state"] is None:
            event = "abort"
        return cls(
            event=event,
            task_id=data["task_id"],
            worker=data.get("worker") or "",
            pid=int(data.get("pid") or 0),
            attempt=int(data.get("attempt") or 0),
            redelivered=bool(data.get("redelivered")),
            t=float(data.get("t") or 0.0),
            state=data.get("state"),
            name=data.get("name") or "",
        )


@dataclass(frozen=True)
class Counts:
    """Jepsen-style counts of one run. Task ids are counted, not events, except where named."""

    #: Enqueue attempts made.
    attempted: int
    #: Attempts the producer got an acknowledgement for.
    acknowledged: int
    #: Attempts the producer was told failed (error, timeout, non-202): "maybe stored".
    unacknowledged: int
    #: Attempted task ids that finished at least once.
    executed: int
    #: Acknowledged task ids that finished at least once.
    executed_acknowledged: int
    #: Acknowledged but never executed: the number a setup promising durability must keep at 0.
    lost: int
    #: Task ids that finished more than once.
    duplicated: int
    #: Executions beyond the first of duplicated ids (sum over ids of finishes - 1).
    extra_executions: int
    #: Executed though the enqueue was not acknowledged (the broker had it after all).
    recovered: int
    #: Executed task ids no attempt explains.
    unexpected: int
    #: All finish events.
    executions: int
    #: Task ids started more than once (a redelivery, whether or not the first run finished).
    started_more_than_once: int
    #: Start events that carried the broker's redelivered flag.
    redelivered_starts: int
    #: Acknowledged ids that started but never finished.
    started_never_finished: int
    #: Runs the worker terminated before they had an outcome (not executions; see Execution).
    aborted: int = 0
    #: Task ids whose effect happened more than once: for a task with the guarantee
    #: (IdempotentTask) its committed effects, for any other task its executions (each run is its
    #: effect). ``duplicated`` counts runs; this counts what a user would see twice.
    duplicated_effects: int = 0
    #: Effects committed by tasks with the guarantee (one per task id when it holds).
    effects: int = 0
    #: Attempted task ids of tasks with the guarantee (an attempt of a GUARDED_KINDS kind, or a
    #: task whose name committed an effect): the guarded part of the stream, counted apart.
    guarded: int = 0
    #: Guarded task ids that finished more than once (runs, as in ``duplicated``).
    guarded_duplicated: int = 0
    #: Guarded task ids whose effect was committed more than once: what the guarantee keeps at 0.
    guarded_duplicated_effects: int = 0
    #: Guarded task ids that finished with no committed effect: the effect is still held by a claim
    #: a killed run left (it lapses with the lease). Read from the outbox when the run could (the
    #: effect itself), else from the ledger's effect entries (then also a lost ledger entry).
    guarded_without_effect: int = 0
    #: Guarded task ids whose effect is in the outbox but has no ledger entry: the worker died (or
    #: the ledger failed) between the effect's commit and its entry. Counted as committed, once.
    guarded_effects_unlogged: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def account(
    attempts: Iterable[Attempt], executions: Iterable[Execution], *, outbox: Mapping[str, int] | None = None
) -> Counts:
    """Count a history the way Jepsen's queue checker does.

    ``lost`` = acknowledged but never executed; ``duplicated`` = executed more than once;
    ``recovered`` = executed though not acknowledged; ``unexpected`` = executed but never
    attempted. Executions of unknown ids are first matched against anonymous unacknowledged
    attempts (the API gives no id with a 503), and count as recovered up to their number.
    ``duplicated_effects`` counts effects, not runs (see Counts). ``outbox``: task id -> effects
    committed in the outbox (:func:`committed_effects`); when given, guarded effects are counted
    from it, not from the ledger's effect entries, which a worker killed right after the commit
    never wrote.
    """
    attempts = list(attempts)
    finishes: Counter[str] = Counter()
    starts: Counter[str] = Counter()
    effects: Counter[str] = Counter()
    guarded_names: set[str] = set()
    names: dict[str, str] = {}
    redelivered_starts = 0
    aborted = 0
    for entry in executions:
        if entry.name:
            names.setdefault(entry.task_id, entry.name)
        if entry.event == "effect":
            effects[entry.task_id] += 1
            guarded_names.add(entry.name)
        elif entry.event == "finish":
            finishes[entry.task_id] += 1
        elif entry.event == "abort":
            aborted += 1
        elif entry.event == "start":
            starts[entry.task_id] += 1
            redelivered_starts += entry.redelivered

    known_ids = {a.task_id for a in attempts if a.task_id is not None}
    acked_ids = {a.task_id for a in attempts if a.acknowledged and a.task_id is not None}
    unacked_known = known_ids - acked_ids
    anonymous_unacked = sum(1 for a in attempts if a.task_id is None and not a.acknowledged)
    executed_ids = set(finishes)
    logged = effects
    if outbox is not None:
        # The outbox may hold other runs' effects (a shared results Redis): this history's ids only.
        ours = known_ids | set(names) | set(finishes) | set(starts)
        effects = Counter({task_id: n for task_id, n in outbox.items() if n > 0 and task_id in ours})
        guarded_names |= {names[task_id] for task_id in effects if task_id in names}

    executed_acked = acked_ids & executed_ids
    unknown_executed = executed_ids - known_ids
    recovered_anonymous = min(len(unknown_executed), anonymous_unacked)
    acknowledged = sum(1 for a in attempts if a.acknowledged)
    # A guarded task's effect is its committed effect; any other task's is every run of it.
    effect_counts = {
        task_id: effects[task_id] if task_id in effects or names.get(task_id) in guarded_names else runs
        for task_id, runs in finishes.items()
    }
    guarded_ids = {a.task_id for a in attempts if a.kind in GUARDED_KINDS and a.task_id is not None}
    guarded_ids |= {task_id for task_id, name in names.items() if name in guarded_names} | set(effects)
    effect_counts.update({task_id: effects[task_id] for task_id in guarded_ids & executed_ids})

    return Counts(
        attempted=len(attempts),
        acknowledged=acknowledged,
        unacknowledged=len(attempts) - acknowledged,
        executed=len(executed_ids & known_ids) + recovered_anonymous,
        executed_acknowledged=len(executed_acked),
        lost=len(acked_ids - executed_ids),
        duplicated=sum(1 for n in finishes.values() if n > 1),
        extra_executions=sum(n - 1 for n in finishes.values() if n > 1),
        recovered=len(unacked_known & executed_ids) + recovered_anonymous,
        unexpected=len(unknown_executed) - recovered_anonymous,
        executions=sum(finishes.values()),
        started_more_than_once=sum(1 for n in starts.values() if n > 1),
        redelivered_starts=redelivered_starts,
        started_never_finished=len({i for i in starts if i not in finishes} & acked_ids),
        aborted=aborted,
        duplicated_effects=sum(1 for n in effect_counts.values() if n > 1)
        + sum(1 for task_id, n in effects.items() if n > 1 and task_id not in finishes),
        effects=sum(effects.values()),
        guarded=len(guarded_ids),
        guarded_duplicated=sum(1 for task_id in guarded_ids if finishes[task_id] > 1),
        guarded_duplicated_effects=sum(1 for task_id in guarded_ids if effects[task_id] > 1),
        guarded_without_effect=sum(1 for task_id in guarded_ids if finishes[task_id] and not effects[task_id]),
        guarded_effects_unlogged=0
        if outbox is None
        else sum(1 for task_id in guarded_ids if effects[task_id] and not logged[task_id]),
    )


def committed_effects(settings: Settings | None, kinds: Iterable[str] | None = None) -> Counter[str] | None:
    """Task id -> entries in the run's outbox (``worker.outbox``, in the result backend's Redis):
    the guarded tasks' committed effects themselves, each entry carrying the id of the task that
    committed it; ``kinds`` default to those of the chaos load's guarded tasks (guarded_noop's
    and send_email's, the API's). None when the outbox cannot be read whole (unreachable, or trimmed at its cap):
    then :func:`account` counts from the ledger (as without ``settings``: a run without a stack)."""
    import redis

    from worker.outbox import MAX_ENTRIES, Outbox
    from worker.tasks.tools import GUARDED_NOOP_OUTBOX

    if settings is None:
        return None
    kinds = (GUARDED_NOOP_OUTBOX, "email") if kinds is None else kinds
    outbox = Outbox(settings.result_backend, settings=settings)
    per_id: Counter[str] = Counter()
    try:
        for kind in kinds:
            entries = outbox.read(kind)
            if len(entries) >= MAX_ENTRIES:
                return None
            per_id.update(str(e["task_id"]) for e in entries if e.get("task_id"))
    except (redis.RedisError, OSError):
        return None
    return per_id


@dataclass(frozen=True)
class Lateness:
    """How late delayed tasks ran: run time (a task's first start) minus due time, in seconds, over
    the acknowledged tasks with a due time that ran. Negative: it ran before it was due."""

    #: Tasks measured.
    n: int
    p50: float
    p99: float
    max: float
    min: float
    mean: float
    #: Tasks that started before their due time (by more than the tolerance asked for).
    early: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of sorted values: a value that occurred."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def lateness(attempts: Iterable[Attempt], executions: Iterable[Execution], *, early_by: float = 0.0) -> Lateness | None:
    """Lateness of every acknowledged task that had a due time and ran (None if there is none).

    A task's run time is its first start, whether or not that run finished: a rerun after a fault
    makes a task late only if the fault came before it started."""
    due = {a.task_id: a.due_at for a in attempts if a.acknowledged and a.task_id is not None and a.due_at is not None}
    first_start: dict[str, float] = {}
    for entry in executions:
        if entry.event == "start" and entry.task_id in due:
            first_start[entry.task_id] = min(entry.t, first_start.get(entry.task_id, entry.t))
    late = sorted(t - due[task_id] for task_id, t in first_start.items())
    if not late:
        return None
    return Lateness(
        n=len(late),
        p50=percentile(late, 50),
        p99=percentile(late, 99),
        max=late[-1],
        min=late[0],
        mean=statistics.fmean(late),
        early=sum(1 for value in late if value < -early_by),
    )


class ProducerLedger:
    """The producer side: thread-safe, in memory, saved to SQLite by :func:`save_history`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self.acknowledged = 0
        self.failed = 0
        self.last_ack_at: float | None = None

    def invoke(self, task_id: str | None, kind: str = "task", *, due_at: float | None = None) -> Attempt:
        with self._lock:
            attempt = Attempt(
                index=len(self._attempts), task_id=task_id, invoked_at=time.time(), kind=kind, due_at=due_at
            )
            self._attempts.append(attempt)
            return attempt

    def ok(self, attempt: Attempt, task_id: str | None = None) -> None:
        with self._lock:
            attempt.completed_at = time.time()
            attempt.outcome = "ok"
            if task_id is not None:
                attempt.task_id = task_id
            self.acknowledged += 1
            self.last_ack_at = attempt.completed_at

    def fail(self, attempt: Attempt, error: str) -> None:
        with self._lock:
            attempt.completed_at = time.time()
            attempt.outcome = "fail"
            attempt.error = error[:300]
            self.failed += 1

    @property
    def attempted(self) -> int:
        return len(self._attempts)

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def acknowledged_ids(self) -> set[str]:
        with self._lock:
            return {a.task_id for a in self._attempts if a.acknowledged and a.task_id is not None}

    def first_ack_after(self, t: float) -> float | None:
        """Completion time of the first acknowledged attempt completed after ``t``."""
        with self._lock:
            times = [a.completed_at for a in self._attempts if a.acknowledged and a.completed_at and a.completed_at > t]
        return min(times) if times else None

    def last_ack_before(self, t: float) -> float | None:
        with self._lock:
            times = [
                a.completed_at for a in self._attempts if a.acknowledged and a.completed_at and a.completed_at <= t
            ]
        return max(times) if times else None

    def errors(self) -> Counter[str]:
        """Failed attempts by error type (the part before the first colon)."""
        with self._lock:
            return Counter((a.error or "?").split(":", 1)[0] for a in self._attempts if a.outcome == "fail")


class ExecutionLog:
    """The execution side: reads the entries the workers append to the ledger Redis, incrementally."""

    def __init__(self, url: str, run: str) -> None:
        import redis

        from worker.ledger import events_key

        self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
        self.key = events_key(run)
        self.entries: list[Execution] = []
        self.finished: Counter[str] = Counter()
        #: task id -> its latest start, while no finish followed it (a killed run stays here
        #: until the task is started again).
        self.running: dict[str, Execution] = {}
        self.last_event_at = 0.0  # local time.time() when something new was read
        #: Task ids finished more than once so far (for progress; the record counts with account()).
        self.duplicated = 0
        self._offset = 0

    def poll(self) -> list[Execution]:
        """Fetch the entries appended since the last call."""
        raw = self._client.lrange(self.key, self._offset, self._offset + 49_999)
        if not raw:
            return []
        self._offset += len(raw)
        new = [Execution.from_json(item) for item in raw]
        self.entries.extend(new)
        for entry in new:
            if entry.event == "finish":
                self.finished[entry.task_id] += 1
                self.duplicated += self.finished[entry.task_id] == 2
                self.running.pop(entry.task_id, None)
            elif entry.event == "start":
                self.running[entry.task_id] = entry
            elif entry.event == "abort":
                self.running.pop(entry.task_id, None)
        self.last_event_at = time.time()
        return new

    def poll_all(self) -> None:
        while self.poll():
            pass

    def starts_after(self, t: float) -> Iterator[Execution]:
        return (e for e in self.entries if e.event == "start" and e.t > t)

    def close(self) -> None:
        self._client.close()


class MemoryExecutionLog:
    """Executions recorded by the runner itself (the publish-kill scenario consumes directly)."""

    def __init__(self) -> None:
        self.entries: list[Execution] = []
        self.finished: Counter[str] = Counter()
        self.running: dict[str, Execution] = {}
        self.last_event_at = 0.0
        self.duplicated = 0

    def add(self, task_id: str, worker: str = "runner") -> None:
        now = time.time()
        self.entries.append(Execution("finish", task_id, worker=worker, t=now))
        self.finished[task_id] += 1
        self.last_event_at = now

    def poll(self) -> list[Execution]:
        return []

    def poll_all(self) -> None:
        return None

    def starts_after(self, t: float) -> Iterator[Execution]:
        return iter(())  # the runner records finishes only

    def close(self) -> None:
        return None


@dataclass
class History:
    """Both halves of a run's history, as saved."""

    attempts: list[Attempt] = field(default_factory=list)
    executions: list[Execution] = field(default_factory=list)


def save_history(path: Path, attempts: Iterable[Attempt], executions: Iterable[Execution]) -> Path:
    """Write the whole history to an SQLite file (one table per half), for later inspection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TABLE attempts (idx INTEGER PRIMARY KEY, task_id TEXT, kind TEXT, invoked_at REAL, "
            "outcome TEXT, completed_at REAL, error TEXT, due_at REAL)"
        )
        db.execute(
            "CREATE TABLE executions (seq INTEGER PRIMARY KEY, event TEXT, task_id TEXT, name TEXT, worker TEXT, "
            "pid INTEGER, attempt INTEGER, redelivered INTEGER, t REAL, state TEXT)"
        )
        db.executemany(
            "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (a.index, a.task_id, a.kind, a.invoked_at, a.outcome, a.completed_at, a.error, a.due_at)
                for a in attempts
            ),
        )
        db.executemany(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (i, e.event, e.task_id, e.name, e.worker, e.pid, e.attempt, int(e.redelivered), e.t, e.state)
                for i, e in enumerate(executions)
            ),
        )
        db.commit()
    finally:
        db.close()
    return path


def load_history(path: Path) -> History:
    """Read a history written by :func:`save_history` (to recount a run offline)."""
    db = sqlite3.connect(path)
    try:
        # Histories saved before due times were recorded have no such column.
        columns = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
        due = "due_at" if "due_at" in columns else "NULL"
        attempts = [
            Attempt(
                index=row[0],
                task_id=row[1],
                kind=row[2],
                invoked_at=row[3],
                outcome=row[4],
                completed_at=row[5],
                error=row[6],
                due_at=row[7],
            )
            for row in db.execute(
                f"SELECT idx, task_id, kind, invoked_at, outcome, completed_at, error, {due} FROM attempts"
            )
        ]
        executions = [
            Execution(
                event=_saved_event(row[0], row[2], row[8]),
                task_id=row[1],
                name=row[2] or "",
                worker=row[3] or "",
                pid=row[4] or 0,
                attempt=row[5] or 0,
                redelivered=bool(row[6]),
                t=row[7] or 0.0,
                state=row[8],
            )
            for row in db.execute(
                "SELECT event, task_id, name, worker, pid, attempt, redelivered, t, state FROM executions ORDER BY seq"
            )
        ]
    finally:
        db.close()
    return History(attempts, executions)


def _saved_event(event: EventName, name: str | None, state: str | None) -> EventName:
    """Histories saved before aborts had an event of their own: a worker's finish (it names the task)
    without a state was one."""
    return "abort" if event == "finish" and name and state is None else event


def pending_counts(attempts: Iterable[Attempt], finished: Counter[str]) -> tuple[int, int]:
    """(acknowledged, acknowledged and executed) for progress display, cheaply."""
    acked = executed = 0
    for attempt in attempts:
        if attempt.acknowledged:
            acked += 1
            if attempt.task_id is not None and finished.get(attempt.task_id):
                executed += 1
    return acked, executed


__all__ = [
    "GUARDED_KINDS",
    "Attempt",
    "Counts",
    "Execution",
    "ExecutionLog",
    "History",
    "Lateness",
    "MemoryExecutionLog",
    "ProducerLedger",
    "account",
    "committed_effects",
    "lateness",
    "load_history",
    "pending_counts",
    "percentile",
    "save_history",
]
