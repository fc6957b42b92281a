"""The raw client ceiling: what the bare client libraries do against the same broker node, with the
same message (a real brokerstack noop message, captured from the broker) and the same durability.

Redis (redis-py), one list ``bench:raw``:

* ``publish``: LPUSH, one command per round trip (what a Celery publish does on Redis);
* ``publish_pipelined``: LPUSH in pipelines of ``batch`` commands;
* ``consume``: BRPOP, one message per round trip (the ceiling the ratios use);
* ``consume_reliable``: BRPOP, then HSET+ZADD (the "unacked" bookkeeping) and HDEL+ZREM (the ack),
  each a pipeline: the three round trips per message kombu's Redis transport makes, without kombu;
* ``consume_batched``: RPOP with a count (Redis >= 6.2): what popping ``batch`` messages per round
  trip would give.

RabbitMQ (kombu + py-amqp, the clients Celery uses), a durable queue ``bench.raw`` with the setup's
own queue arguments (classic with x-max-priority, or quorum), persistent messages:

* ``publish``: kombu ``Producer.publish`` without publisher confirms;
* ``publish_confirm``: the same with ``confirm_publish`` (one confirm awaited per message, what
  Celery/kombu do);
* ``publish_confirm_pipelined``: confirms on, up to ``window`` messages in flight, acks (possibly
  ``multiple``) collected as they come: the same guarantee, without a round trip per message;
* ``consume``: ``basic_consume`` with prefetch ``prefetch`` and one ack per message, and
  ``consume_prefetch1`` with prefetch 1;
* ``consume_batched``: ``basic_consume`` with a large prefetch (``batch_prefetch``) and one
  ``multiple`` ack per half of it: the most the client gets out of the broker.

The **ceiling** brokerstack is compared with is the best client each broker has, at the durability
of the setup (the ``ceiling`` of the broker's entry in :mod:`lab.experiments.bench.vendors`): Redis
pipelined LPUSH and RPOP with a count; RabbitMQ confirms in a
window (or none, on a setup without confirms) and the batched consume.

Every measurement is ``{"messages", "seconds", "per_s"}``; ``repeated`` folds repetitions of a
whole run into medians with their range.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.experiments.bench.stats import rate

RAW_REDIS_KEY = "bench:raw"
RAW_AMQP_QUEUE = "bench.raw"
#: RabbitMQ's batched consume: messages in flight to the consumer, acked (``multiple``) per half.
BATCH_PREFETCH = 1000


def repeated(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole raw runs (alternated: every measurement once per run, in the same order) as one: each
    rate the median of the runs with its range (``median_of_runs``), the rest from the first run."""
    from lab.experiments.bench.stats import median_of_runs

    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, dict) and "per_s" in value:
            out[key] = median_of_runs([run[key] for run in runs if isinstance(run.get(key), dict)])
    out["repeats"] = len(runs)
    return out


Tick = Callable[[str], None]


@dataclass
class CapturedMessage:
    """A real brokerstack noop message as the broker stores it.

    Redis: ``payload`` is the JSON envelope kombu pushes onto the list. RabbitMQ: ``payload`` is
    the body and ``headers`` / ``properties`` are the AMQP ones."""

    payload: bytes
    task_id: str
    headers: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    #: Redis: the list it was pushed to (brokerstack reverses kombu's priority order, so a
    #: priority-0 task lands on the list of step 9).
    redis_key: str | None = None

    @property
    def size(self) -> int:
        """Bytes of the payload (Redis: the whole envelope; RabbitMQ: the body)."""
        return len(self.payload)

    @property
    def header_bytes(self) -> int:
        """RabbitMQ: the task's AMQP headers as JSON (about what they take on the wire); Redis: 0,
        they are inside the envelope."""
        import json

        return len(json.dumps(self.headers, default=str)) if self.headers else 0

    def with_id(self, new_id: str) -> bytes:
        """The payload (Redis envelope) with the task id replaced (same length: a uuid4)."""
        return self.payload.replace(self.task_id.encode(), new_id.encode())


# --- Redis -------------------------------------------------------------------------------------------


def redis_raw(
    url: str, message: CapturedMessage, count: int, *, batch: int = 100, tick: Tick | None = None
) -> dict[str, Any]:
    import redis

    client: Any = redis.Redis.from_url(url, socket_timeout=30)  # sync: redis-py types replies as sync|async
    payload = message.payload
    key = RAW_REDIS_KEY
    out: dict[str, Any] = {"client": "redis-py", "message_bytes": message.size, "batch": batch}
    tick = tick or (lambda _: None)
    try:
        client.delete(key, "bench:raw:unacked", "bench:raw:unacked_index")

        tick("redis LPUSH loop")
        started = time.perf_counter()
        for _ in range(count):
            client.lpush(key, payload)
        out["publish"] = rate(count, time.perf_counter() - started)

        tick("redis BRPOP loop")
        started = time.perf_counter()
        for _ in range(count):
            client.brpop([key], timeout=5)
        out["consume"] = rate(count, time.perf_counter() - started)

        tick("redis LPUSH pipelined")
        started = time.perf_counter()
        _pipelined_lpush(client, key, [payload] * count, batch)
        out["publish_pipelined"] = rate(count, time.perf_counter() - started)

        tick("redis BRPOP + unacked bookkeeping + ack")
        started = time.perf_counter()
        for i in range(count):
            _, raw = client.brpop([key], timeout=5)
            tag = str(i)
            pipe = client.pipeline()
            pipe.zadd("bench:raw:unacked_index", {tag: time.time()}).hset("bench:raw:unacked", tag, raw)
            pipe.execute()
            pipe = client.pipeline()
            pipe.zrem("bench:raw:unacked_index", tag).hdel("bench:raw:unacked", tag)
            pipe.execute()
        out["consume_reliable"] = rate(count, time.perf_counter() - started)

        tick("redis RPOP with count")
        _pipelined_lpush(client, key, [payload] * count, batch)
        started = time.perf_counter()
        got = 0
        while got < count:
            items = client.rpop(key, batch) or []
            got += len(items)
            if not items:
                break
        out["consume_batched"] = rate(got, time.perf_counter() - started)
    finally:
        try:
            client.delete(key, "bench:raw:unacked", "bench:raw:unacked_index")
        finally:
            client.close()
    return out


def _pipelined_lpush(client: Any, key: str, payloads: list[bytes], batch: int) -> None:
    for i in range(0, len(payloads), batch):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[i : i + batch]:
            pipe.lpush(key, payload)
        pipe.execute()


# --- RabbitMQ ----------------------------------------------------------------------------------------


def amqp_raw(
    url: str,
    message: CapturedMessage,
    count: int,
    queue_arguments: dict[str, Any],
    *,
    prefetch: int = 16,
    window: int = 256,
    tick: Tick | None = None,
) -> dict[str, Any]:
    from kombu import Connection, Exchange, Queue

    tick = tick or (lambda _: None)
    exchange = Exchange(RAW_AMQP_QUEUE, type="direct", durable=True)
    queue = Queue(RAW_AMQP_QUEUE, exchange, routing_key=RAW_AMQP_QUEUE, durable=True, queue_arguments=queue_arguments)
    out: dict[str, Any] = {
        "client": "kombu+py-amqp",
        "message_bytes": message.size,
        "header_bytes": message.header_bytes,
        "delivery_mode": "persistent",
        "queue_arguments": queue_arguments,
        "prefetch": prefetch,
        "confirm_window": window,
    }
    publish_kwargs = _publish_kwargs(message)
    with Connection(url) as conn:
        channel = conn.channel()
        queue(channel).declare()
        queue(channel).purge()
        try:
            tick("amqp publish (no confirms)")
            out["publish"] = _kombu_publish(conn, exchange, message, publish_kwargs, count, confirm=False)
            tick(f"amqp consume, prefetch {prefetch}")
            out["consume"] = _kombu_consume(conn, queue, count, prefetch)

            tick("amqp publish, a confirm per message")
            with Connection(url, transport_options={"confirm_publish": True}) as confirming:
                out["publish_confirm"] = _kombu_publish(
                    confirming, exchange, message, publish_kwargs, count, confirm=True
                )
            tick("amqp consume, prefetch 1")
            out["consume_prefetch1"] = _kombu_consume(conn, queue, count, 1)

            tick("amqp publish, pipelined confirms")
            out["publish_confirm_pipelined"] = _pipelined_confirm_publish(url, message, count, window)
            tick(f"amqp consume, prefetch {BATCH_PREFETCH}, multiple acks")
            out["consume_batched"] = _batched_consume(url, count, BATCH_PREFETCH)
            out["batch_prefetch"] = BATCH_PREFETCH
        finally:
            try:
                queue(channel).delete()
                exchange(channel).delete()
            except Exception:  # noqa: BLE001 - cleanup of a bench queue is best effort
                pass
            channel.close()
    return out


def _publish_kwargs(message: CapturedMessage) -> dict[str, Any]:
    props = dict(message.properties or {})
    return {
        "headers": dict(message.headers or {}),
        "content_type": props.get("content_type", "application/json"),
        "content_encoding": props.get("content_encoding", "utf-8"),
        "correlation_id": props.get("correlation_id"),
        "reply_to": props.get("reply_to"),
        "priority": props.get("priority", 0),
        "delivery_mode": 2,
    }


def _kombu_publish(
    conn: Any, exchange: Any, message: CapturedMessage, kwargs: dict[str, Any], count: int, *, confirm: bool
) -> dict[str, Any]:
    from kombu import Producer

    producer = Producer(conn.channel(), exchange=exchange, routing_key=RAW_AMQP_QUEUE)
    body = message.payload
    started = time.perf_counter()
    for _ in range(count):
        producer.publish(body, **kwargs)
    result = rate(count, time.perf_counter() - started)
    result["confirms"] = "per message" if confirm else "none"
    producer.channel.close()
    return result


def _kombu_consume(conn: Any, queue: Any, count: int, prefetch: int) -> dict[str, Any]:
    from kombu import Consumer

    got = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal got
        message.ack()
        got += 1

    channel = conn.channel()
    with Consumer(channel, queues=[queue], callbacks=[on_message], prefetch_count=prefetch, accept=None):
        started = time.perf_counter()
        while got < count:
            conn.drain_events(timeout=10)
        elapsed = time.perf_counter() - started
    channel.close()
    result = rate(got, elapsed)
    result["prefetch"] = prefetch
    result["acks"] = "one per message"
    return result


def _pipelined_confirm_publish(url: str, message: CapturedMessage, count: int, window: int) -> dict[str, Any]:
    """Confirms on, up to ``window`` unconfirmed messages in flight (py-amqp under kombu)."""
    import amqp
    from kombu import Connection

    kwargs = _publish_kwargs(message)
    with Connection(url) as conn:
        client: amqp.Connection = conn.connection
        channel = client.channel()
        channel.confirm_select()
        confirmed = 0
        nacked = 0

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            nonlocal confirmed
            confirmed = delivery_tag if multiple else confirmed + 1

        def on_nack(delivery_tag: int, multiple: bool) -> None:
            nonlocal nacked, confirmed
            nacked += 1
            confirmed = delivery_tag if multiple else confirmed + 1

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        properties = {k: v for k, v in kwargs.items() if v is not None and k != "headers"}
        properties["application_headers"] = kwargs["headers"]
        started = time.perf_counter()
        for sent in range(1, count + 1):
            msg = amqp.Message(message.payload, **properties)
            channel._basic_publish(msg, exchange=RAW_AMQP_QUEUE, routing_key=RAW_AMQP_QUEUE)
            while sent - confirmed >= window:
                client.drain_events(timeout=10)
        while confirmed < count:
            client.drain_events(timeout=10)
        elapsed = time.perf_counter() - started
        channel.close()
    result = rate(count, elapsed)
    result["confirms"] = f"pipelined, window {window}"
    result["nacked"] = nacked
    # The `count` messages it published stay for the batched consume.
    return result


def _batched_consume(url: str, count: int, prefetch: int) -> dict[str, Any]:
    """``count`` messages with ``prefetch`` in flight and one ``multiple`` ack per half of it (py-amqp
    under kombu): the consumer's best case, what a client that batches its acks gets."""
    import amqp
    from kombu import Connection

    ack_every = max(prefetch // 2, 1)
    with Connection(url) as conn:
        client: amqp.Connection = conn.connection
        channel = client.channel()
        channel.basic_qos(0, prefetch, False)
        got = 0
        unacked = 0

        def on_message(message: Any) -> None:
            nonlocal got, unacked
            got += 1
            unacked += 1
            if unacked >= ack_every or got >= count:
                channel.basic_ack(message.delivery_tag, multiple=True)
                unacked = 0

        tag = channel.basic_consume(RAW_AMQP_QUEUE, callback=on_message)
        started = time.perf_counter()
        while got < count:
            client.drain_events(timeout=10)
        elapsed = time.perf_counter() - started
        channel.basic_cancel(tag)
        channel.queue_purge(RAW_AMQP_QUEUE)  # what arrived after the last one counted, if anything
        channel.close()
    result = rate(got, elapsed)
    result["prefetch"] = prefetch
    result["acks"] = f"multiple, one per {ack_every}"
    return result
