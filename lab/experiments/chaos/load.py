"""Producers that put a steady load on the stack and write every attempt into the ledger.

* :class:`CeleryLoad`: one thread publishing through a producer-only Celery app, with client-chosen
  task ids: recorded as attempted before ``apply_async``, acknowledged when it returned (with
  publisher confirms: the broker confirmed), failed with the error otherwise. It never restarts:
  Celery and kombu must reconnect by themselves.
* :class:`ApiLoad`: client threads POSTing to the API; a 202 is the acknowledgement (and names the
  task id), anything else a failure whose latency is kept, to check the API's answer bound. Like a
  careful client, each request carries an ``Idempotency-Key`` and is retried with the same key after
  a 503, a 409 or a timeout, so a publish whose answer was lost is the same task, not a second one
  (each try is its own ledger attempt: the refusals stay counted).

The default stream of both (:func:`noop_plan`, :func:`api_plan`) mixes tasks with the exactly-once
guarantee (``IdempotentTask``: ``guarded_noop`` through Celery, ``send_email`` through the API)
into the plain no-ops, a fixed seeded share of them, so every run counts duplicated *effects* of
guarded tasks apart from duplicated *executions* (``lab.experiments.chaos.ledger``: the
``guarded_*`` counts).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.experiments.chaos.ledger import ProducerLedger
from worker.settings import Settings

#: After a failed publish a producer waits this long before the next attempt, as a client would,
#: so an outage does not burn the run's whole budget of attempts in a tight loop.
FAILURE_BACKOFF = 0.25

#: Tries of one API request (same Idempotency-Key) before the client gives up on it: with the
#: backoff and the request timeout, longer than any outage the scenarios inject.
API_KEYED_TRIES = 200
#: Answers after which a careful client retries with the same key: unavailable, still in flight.
API_RETRY_STATUSES = frozenset({409, 503})

#: (task name, positional args, kind) for the i-th task of a run.
Plan = Callable[[int], tuple[str, list, str]]
#: (path, JSON body, kind) of the i-th request of an API load.
ApiPlan = Callable[[int], tuple[str, dict, str]]

PLAIN_TASK = "worker.tasks.tools.noop"
#: A no-op with the guarantee whose effect is one outbox entry; its claim lease is short, so a claim
#: a killed worker left lapses within the run (worker.tasks.tools.GUARDED_NOOP_LEASE).
GUARDED_TASK = "worker.tasks.tools.guarded_noop"
#: The API's guarded task: the product's own (its claim lease is the hard time limit, but the
#: scenario that loads the API, producer-outage, kills the broker, never a worker mid-task).
API_GUARDED_TASK = "send_email"
API_PLAIN_TASK = "noop"
#: Share of the default stream's tasks sent with the guarantee. Half and half: both parts get the
#: same faults and enough tasks to count.
GUARDED_SHARE = 0.5
#: Seeds the per-index draw: the same indices are guarded in every run, on every setup, so two
#: records of one scenario mix exactly the same tasks.
MIX_SEED = 15


def is_guarded(index: int) -> bool:
    """Whether the ``index``-th task of the default stream carries the guarantee (seeded, fixed)."""
    return random.Random(f"{MIX_SEED}-{index}").random() < GUARDED_SHARE


def plain_noop_plan(_: int) -> tuple[str, list, str]:
    return PLAIN_TASK, [], "noop"


def mixed_plan(index: int) -> tuple[str, list, str]:
    """The default stream: no-ops, GUARDED_SHARE of them (seeded per index) with the guarantee."""
    if is_guarded(index):
        return GUARDED_TASK, [], "guarded"
    return plain_noop_plan(index)


#: What every scenario's stream is made of unless it sends its own tasks (their plans fall back to
#: it): the mix, so every run counts guarded and unguarded tasks side by side.
noop_plan: Plan = mixed_plan


def api_plan(index: int) -> tuple[str, dict, str]:
    """The API load's stream: the same seeded mix, through ``POST /tasks/{name}``."""
    if is_guarded(index):
        return f"/tasks/{API_GUARDED_TASK}", {"args": [f"chaos-{index}", "chaos@example.com"]}, "api-guarded"
    return f"/tasks/{API_PLAIN_TASK}", {}, "api"


class Pacer:
    """Spaces calls ``1/rate`` apart across threads; no catching up after a stall (rate <= 0: none)."""

    def __init__(self, rate: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.stop = stop
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        delay = slot - time.monotonic()
        if delay > 0:
            self.stop.wait(delay)


class Counter:
    """A shared index handing out 0..total-1 once each, never past ``limit``: the runner holds the
    stream before the next fault point until the previous fault is over (so a run's faults all
    land inside its load, whatever the rate and however slow a broker restarts)."""

    def __init__(self, total: int, limit: int | None = None) -> None:
        self.total = total
        self._limit = total if limit is None else min(limit, total)
        self._next = 0
        self._cond = threading.Condition()
        self.held_s = 0.0

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self._limit = min(max(limit, self._limit), self.total)
            self._cond.notify_all()

    def release(self) -> None:
        self.set_limit(self.total)

    def take(self, stop: threading.Event) -> int | None:
        with self._cond:
            if self._next >= self._limit and self._next < self.total:
                held = time.monotonic()
                while self._next >= self._limit and not stop.is_set():
                    self._cond.wait(0.1)
                self.held_s += time.monotonic() - held
            if self._next >= self.total or stop.is_set():
                return None
            self._next += 1
            return self._next - 1


class CeleryLoad(threading.Thread):
    """Publishes ``total`` tasks through Celery at ``rate`` per second. With ``countdown`` (index ->
    seconds) each task is delayed and its attempt carries its due time (publish time + countdown)."""

    def __init__(
        self,
        settings: Settings,
        ledger: ProducerLedger,
        *,
        total: int,
        rate: float,
        id_prefix: str,
        plan: Plan = noop_plan,
        threads: int = 1,
        limit: int | None = None,
        countdown: Callable[[int], float] | None = None,
    ) -> None:
        super().__init__(name="chaos-celery-load", daemon=True)
        self.countdown = countdown
        self.settings = settings
        self.ledger = ledger
        self.total = total
        self.id_prefix = id_prefix
        self.plan = plan
        self.threads = threads
        self.stop_event = threading.Event()
        self.pacer = Pacer(rate, self.stop_event)
        self.counter = Counter(total, limit)
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        from worker.celery_app import create_celery

        app = create_celery(self.settings, main="chaos-producer", producer_only=True)
        self.started_at = time.time()
        try:
            helpers = [
                threading.Thread(target=self._publish_loop, args=(app,), daemon=True) for _ in range(self.threads - 1)
            ]
            for helper in helpers:
                helper.start()
            self._publish_loop(app)
            for helper in helpers:
                helper.join()
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self.error = exc
        finally:
            self.finished_at = time.time()
            try:
                app.close()
            except Exception:  # noqa: BLE001
                pass

    def _publish_loop(self, app: object) -> None:
        while not self.stop_event.is_set():
            index = self.counter.take(self.stop_event)
            if index is None:
                return
            self.pacer.wait()
            if self.stop_event.is_set():
                return
            name, args, kind = self.plan(index)
            task_id = f"{self.id_prefix}-{index:07d}"
            countdown = None if self.countdown is None else self.countdown(index)
            # Celery turns the countdown into an ETA a moment after this: the recorded due time is
            # at most that moment early, never late.
            attempt = self.ledger.invoke(task_id, kind, due_at=None if countdown is None else time.time() + countdown)
            try:
                app.tasks[name].apply_async(args, task_id=task_id, countdown=countdown)  # type: ignore[attr-defined]
            except Exception as exc:  # noqa: BLE001 - any failure: not acknowledged
                self.ledger.fail(attempt, f"{type(exc).__name__}: {exc}")
                self.stop_event.wait(FAILURE_BACKOFF)
            else:
                self.ledger.ok(attempt)

    @property
    def done(self) -> bool:
        return not self.is_alive() and self.started_at is not None

    def stop(self, timeout: float = 30) -> None:
        self.stop_event.set()
        self.counter.release()
        self.join(timeout)


@dataclass
class ApiStats:
    refusals: int = 0
    #: Latency of every non-202 answer (and of transport errors), seconds.
    refusal_latencies: list[float] = field(default_factory=list)
    transport_errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ApiLoad:
    """``clients`` threads POSTing the ``plan``'s requests (the mix: ``/tasks/noop`` and
    ``/tasks/send_email``) until ``total`` requests were made."""

    def __init__(
        self,
        base_url: str,
        ledger: ProducerLedger,
        *,
        total: int,
        rate: float,
        clients: int,
        request_timeout: float,
        api_key: str | None = None,
        limit: int | None = None,
        plan: ApiPlan = api_plan,
    ) -> None:
        self.base_url = base_url
        self.plan = plan
        self.ledger = ledger
        self.total = total
        self.request_timeout = request_timeout
        self.headers = {"X-API-Key": api_key} if api_key else {}
        #: Idempotency-Keys are this plus the request's index: unique per load, stable across retries.
        self.key_prefix = uuid.uuid4().hex
        self.stop_event = threading.Event()
        self.pacer = Pacer(rate, self.stop_event)
        self.counter = Counter(total, limit)
        self.stats = ApiStats()
        self.errors: list[BaseException] = []
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._threads = [
            threading.Thread(target=self._client, name=f"chaos-api-{i}", daemon=True) for i in range(clients)
        ]

    def start(self) -> None:
        self.started_at = time.time()
        for thread in self._threads:
            thread.start()

    @property
    def done(self) -> bool:
        return self.started_at is not None and not any(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 30) -> None:
        self.stop_event.set()
        self.counter.release()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    def _client(self) -> None:
        import httpx

        try:
            with httpx.Client(base_url=self.base_url, timeout=self.request_timeout, headers=self.headers) as client:
                while not self.stop_event.is_set():
                    index = self.counter.take(self.stop_event)
                    if index is None:
                        break
                    self.pacer.wait()
                    key = f"{self.key_prefix}-{index:07d}"
                    path, body, kind = self.plan(index)
                    for _ in range(API_KEYED_TRIES):
                        if self.stop_event.is_set() or self._one(client, key, path, body, kind):
                            break
        except BaseException as exc:  # noqa: BLE001 - reported by the runner
            self.errors.append(exc)
        finally:
            self.finished_at = time.time()

    def _one(self, client: object, key: str, path: str, body: dict, kind: str) -> bool:
        """One try of the request with Idempotency-Key ``key``; False if it is worth retrying."""
        import httpx

        attempt = self.ledger.invoke(None, kind)
        started = time.monotonic()
        try:
            response = client.post(path, json=body, headers={"Idempotency-Key": key})  # type: ignore[attr-defined]
        except httpx.HTTPError as exc:
            latency = time.monotonic() - started
            self.ledger.fail(attempt, f"{type(exc).__name__}: {exc}")
            with self.stats.lock:
                self.stats.transport_errors += 1
                self.stats.refusal_latencies.append(latency)
            self.stop_event.wait(FAILURE_BACKOFF)
            return False
        latency = time.monotonic() - started
        with self.stats.lock:
            key = str(response.status_code)
            self.stats.statuses[key] = self.stats.statuses.get(key, 0) + 1
        if response.status_code == 202:
            self.ledger.ok(attempt, response.json()["task_id"])
            return True
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = response.text[:100]
        self.ledger.fail(attempt, f"HTTP {response.status_code}: {error}")
        with self.stats.lock:
            self.stats.refusals += 1
            self.stats.refusal_latencies.append(latency)
        self.stop_event.wait(FAILURE_BACKOFF)
        return response.status_code not in API_RETRY_STATUSES


class SinglePublisher:
    """Publishes one task at a time from the caller's thread, for scenarios that publish the next
    task only once the last one ran (idle-kill). Same ledger rules as :class:`CeleryLoad`."""

    def __init__(self, settings: Settings, ledger: ProducerLedger, *, id_prefix: str) -> None:
        from worker.celery_app import create_celery

        self.app = create_celery(settings, main="chaos-producer", producer_only=True)
        self.ledger = ledger
        self.id_prefix = id_prefix
        self.index = 0
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def publish(self, name: str, args: list, kind: str) -> str | None:
        """The task id if the publish was acknowledged, else None (recorded as failed)."""
        if self.started_at is None:
            self.started_at = time.time()
        task_id = f"{self.id_prefix}-{self.index:07d}"
        self.index += 1
        attempt = self.ledger.invoke(task_id, kind)
        try:
            self.app.tasks[name].apply_async(args, task_id=task_id)
        except Exception as exc:  # noqa: BLE001 - any failure: not acknowledged
            self.ledger.fail(attempt, f"{type(exc).__name__}: {exc}")
            return None
        self.ledger.ok(attempt)
        return task_id

    def finish(self) -> None:
        self.finished_at = time.time()

    @property
    def done(self) -> bool:
        return self.finished_at is not None

    def stop(self, timeout: float = 0) -> None:
        self.finished_at = self.finished_at or time.time()
        try:
            self.app.close()
        except Exception:  # noqa: BLE001
            pass
