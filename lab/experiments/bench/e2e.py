"""brokerstack end to end: real ``celery worker`` processes, brokerstack's own configuration.

Per pool (and on Redis per transport, brokerstack's and kombu's, alternated) two phases, each
worker process started afresh:

* **backlog** (throughput), twice: ``tasks`` noop tasks are published through a producer-only
  Celery app (one thread, ``apply_async``: the enqueue rate and the per-call enqueue latency),
  *then* a worker is started and the time from the queue's first drop to its being empty is the
  consume rate. First fire-and-forget (``ignore_result``) with a throughput prefetch, as the raw
  ceiling stores no results either; then with brokerstack's defaults (prefetch 1, STARTED and
  SUCCESS written to the result backend), which is the price of tracking every task. No
  execution ledger here: it would add two Redis writes per task to what is measured. Each drain
  is repeated (``repeats``): the rates recorded are medians with their range.
* **steady** (latency): a worker with the execution ledger on (``LEDGER_URL``: it records each
  task's start and finish with wall-clock time) gets noop tasks at a steady ``rate``; the producer
  notes each task's enqueue time, so enqueue->start and enqueue->finish are per-task latencies.

The queue is read directly on the broker: Redis ``LLEN`` of the queue's ten priority lists plus
the ``unacked`` hash (delivered, not yet acknowledged), RabbitMQ a passive ``queue.declare``
(ready messages; at most prefetch x concurrency may still be running when it reads 0).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from lab.experiments.bench.raw import CapturedMessage
from lab.experiments.bench.stats import latency_ms, rate
from worker.topology import DEFAULT_QUEUE

NOOP = "worker.tasks.tools.noop"
#: Between two looks at the queue while it drains.
DEPTH_POLL = 0.02

Tick = Callable[[str], None]


# --- looking at the queue -------------------------------------------------------------------------


def redis_queue_keys(queue: str) -> list[str]:
    """The Redis lists of one queue, one per priority step (kombu: "<queue>\\x06\\x16<step>", step 0
    without a suffix)."""
    from lab.harness.stacks import REDIS_PRIORITY_SEP
    from worker.brokers.redis import PRIORITY_STEPS

    return [queue if p == 0 else f"{queue}{REDIS_PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


class Depth(Protocol):
    """Messages of one work queue still in the broker; ``purge`` empties it."""

    def __call__(self) -> int: ...
    def purge(self) -> None: ...
    def close(self) -> None: ...


class RedisQueueDepth:
    """Messages of one work queue still in Redis: ready (every priority list) + unacked."""

    def __init__(self, url: str, queue: str = DEFAULT_QUEUE) -> None:
        import redis

        from lab.harness.stacks import REDIS_UNACKED_KEY
        from worker.brokers import redis as redis_broker

        self.url = url
        self.queue = queue
        self._client = redis.Redis.from_url(url, socket_timeout=10)
        self._keys = redis_queue_keys(queue)
        self._unacked = REDIS_UNACKED_KEY
        # Rings left by one run would wake the next run's idle consumer for nothing (a
        # transport without doorbells has none to clear).
        ring = getattr(redis_broker, "doorbell_key", None)
        self._extra = [ring(queue)] if ring else []

    def __call__(self) -> int:
        pipe = self._client.pipeline(transaction=False)
        for key in self._keys:
            pipe.llen(key)
        pipe.hlen(self._unacked)
        return sum(int(n) for n in pipe.execute())

    def purge(self) -> None:
        self._client.delete(*self._keys, self._unacked, "unacked_index", *self._extra)

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001
            pass


class AmqpQueueDepth:
    """Ready messages of one work queue on RabbitMQ (a passive ``queue.declare``)."""

    def __init__(self, url: str, queue: str = DEFAULT_QUEUE) -> None:
        from kombu import Connection

        self.url = url
        self.queue = queue
        self._conn = Connection(url)
        self._channel = self._conn.channel()

    def __call__(self) -> int:
        _, count, _ = self._channel.queue_declare(queue=self.queue, passive=True)
        return int(count)

    def purge(self) -> None:
        self._channel.queue_purge(self.queue)

    def close(self) -> None:
        try:
            self._channel.close()
            self._conn.release()
        except Exception:  # noqa: BLE001
            pass


def QueueDepth(broker: str, url: str, queue: str = DEFAULT_QUEUE) -> Depth:
    """The queue-depth reader of ``broker`` (its bench vendor's)."""
    from lab.experiments.bench.vendors import bench_vendor  # the vendors import this module

    return bench_vendor(broker).queue_depth(url, queue)


# --- the message as stored ----------------------------------------------------------------------------


def capture_message(app: Any, broker: str, url: str, queue: str = DEFAULT_QUEUE) -> CapturedMessage:
    """Publish one noop through brokerstack and take it back off the broker as it is stored."""
    from lab.experiments.bench.vendors import bench_vendor  # the vendors import this module

    return bench_vendor(broker).capture(app, url, queue)


def capture_redis_message(app: Any, url: str, queue: str = DEFAULT_QUEUE) -> CapturedMessage:
    import redis

    result = app.tasks[NOOP].apply_async()
    client: Any = redis.Redis.from_url(url)  # sync: redis-py types replies as sync|async
    try:
        for key in redis_queue_keys(queue):
            payload = client.rpop(key)
            if payload is not None:
                break
    finally:
        client.close()
    if payload is None:
        raise RuntimeError(f"the captured noop message is not in the Redis lists of {queue!r}")
    return CapturedMessage(payload=payload, task_id=result.id, redis_key=key)


def capture_amqp_message(app: Any, url: str, queue: str = DEFAULT_QUEUE) -> CapturedMessage:
    from kombu import Connection

    result = app.tasks[NOOP].apply_async()
    with Connection(url) as conn:
        channel = conn.channel()
        for _ in range(50):
            message = channel.basic_get(queue, no_ack=True)
            if message is not None:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the captured noop message is not in RabbitMQ queue {queue!r}")
        properties = dict(message.properties)
        headers = properties.pop("application_headers", None) or getattr(message, "headers", None) or {}
        channel.close()
    body = message.body if isinstance(message.body, bytes) else message.body.encode()
    return CapturedMessage(payload=body, task_id=result.id, headers=dict(headers), properties=properties)


# --- publishing ---------------------------------------------------------------------------------------


def publish_backlog(app: Any, count: int, tick: Tick | None = None, *, ignore_result: bool = False) -> dict[str, Any]:
    """``count`` noop tasks through ``apply_async`` as fast as one thread goes; ``ignore_result``
    makes them fire-and-forget (the worker stores no state for them)."""
    task = app.tasks[NOOP]
    durations: list[float] = []
    started = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        task.apply_async(ignore_result=ignore_result)
        durations.append(time.perf_counter() - t0)
        if tick is not None and i % 500 == 0:
            tick(f"publishing {i}/{count}")
    elapsed = time.perf_counter() - started
    return {**rate(count, elapsed), "producer_threads": 1, "call_latency_ms": latency_ms(durations)}


def drain(
    depth: Depth,
    count: int,
    timeout: float,
    tick: Tick | None = None,
    probes: Callable[[], dict[str, Any]] | None = None,
    max_seconds: float | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """Wait until the queue holding ``count`` messages is empty; the rate counts from the first
    message taken. ``probes()`` (resource samples) is read at the first drop and at the end, and
    returned with the result. A slow consumer is measured for at most ``max_seconds`` after its
    first message (``truncated``: the rest is left for the caller to purge)."""
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    at_first: dict[str, Any] | None = None
    waited_from = time.perf_counter()
    last_tick = 0.0
    while True:
        now = time.perf_counter()
        left = depth()
        if first is None and left < count:
            first = (now, left)
            at_first = probes() if probes else None
        if left == 0:
            break
        if first is not None and max_seconds is not None and now - first[0] >= max_seconds:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the queue still holds {left} of {count} tasks after {timeout:g} s")
        if tick is not None and now - last_tick > 0.25:
            tick(f"draining: {count - left}/{count}")
            last_tick = now
        time.sleep(DEPTH_POLL)
    end = time.perf_counter()
    at_end = probes() if probes else None
    assert first is not None
    first_at, first_left = first
    # Exactly what was observed: first_left - left messages left the queue between the two looks.
    out = {
        **rate(first_left - left, max(end - first_at, 1e-6)),
        "startup_s": round(first_at - waited_from, 3),
        "truncated": left > 0,
    }
    return out, at_first, at_end


def steady_latency(
    app: Any,
    ledger_url: str,
    ledger_run: str,
    *,
    rate_per_s: float,
    seconds: float,
    warmup_tasks: int,
    timeout: float,
    tick: Tick | None = None,
) -> dict[str, Any]:
    """Noop tasks at ``rate_per_s`` for ``seconds``; enqueue->start and enqueue->finish per task
    from the execution ledger of the worker."""
    import redis

    from worker.ledger import events_key

    task = app.tasks[NOOP]
    key = events_key(ledger_run)
    client = redis.Redis.from_url(ledger_url, socket_timeout=10)
    try:
        # Warm-up: the worker's first tasks pay for connections and imports.
        for _ in range(warmup_tasks):
            task.apply_async(task_id=f"warmup-{uuid.uuid4()}")
        _wait_finished(client, key, warmup_tasks, timeout, tick, "warm-up")
        client.delete(key)

        count = max(1, int(rate_per_s * seconds))
        interval = 1.0 / rate_per_s
        enqueued: dict[str, float] = {}
        call: list[float] = []
        started = time.perf_counter()
        next_at = started
        for i in range(count):
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            next_at += interval
            task_id = str(uuid.uuid4())
            t_wall = time.time()
            t0 = time.perf_counter()
            task.apply_async(task_id=task_id)
            call.append(time.perf_counter() - t0)
            enqueued[task_id] = t_wall
            if tick is not None and i % 100 == 0:
                tick(f"steady load {i}/{count}")
        publish_elapsed = time.perf_counter() - started
        _wait_finished(client, key, count, timeout, tick, "steady load")
        entries = [json.loads(raw) for raw in client.lrange(key, 0, -1)]
        client.delete(key)
    finally:
        client.close()

    starts: dict[str, float] = {}
    finishes: dict[str, float] = {}
    for entry in entries:
        target = starts if entry["event"] == "start" else finishes
        target.setdefault(entry["task_id"], entry["t"])
    to_start = [starts[i] - t for i, t in enqueued.items() if i in starts]
    to_finish = [finishes[i] - t for i, t in enqueued.items() if i in finishes]
    return {
        "rate_target_per_s": rate_per_s,
        "rate_achieved_per_s": round(count / publish_elapsed, 1) if publish_elapsed > 0 else None,
        "tasks": count,
        "warmup_tasks": warmup_tasks,
        "finished": len(to_finish),
        "enqueue_call_ms": latency_ms(call),
        "enqueue_to_start_ms": latency_ms(to_start),
        "enqueue_to_finish_ms": latency_ms(to_finish),
    }


def _wait_finished(client: Any, key: str, count: int, timeout: float, tick: Tick | None, what: str) -> None:
    """Until the ledger holds ``count`` finish entries (a start and a finish per task)."""
    deadline = time.monotonic() + timeout
    while True:
        have = client.llen(key) // 2
        if have >= count:
            # Both entries of the last task are written one after the other: let them land.
            time.sleep(0.05)
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {have} of {count} tasks finished after {timeout:g} s")
        if tick is not None:
            tick(f"{what}: {have}/{count} finished")
        time.sleep(0.05)
