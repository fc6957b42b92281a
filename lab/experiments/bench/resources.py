"""Broker resource use: CPU and RSS of the broker's process tree (from /proc, both drivers), and the
memory a backlog of noop tasks takes.

The backlog is filled with real brokerstack noop messages (the captured message with fresh task
ids and delivery tags), written the fast way (Redis: pipelined LPUSH onto the queue's list;
RabbitMQ: persistent messages to the queue's exchange with pipelined confirms), so that 100k
tasks take seconds, not minutes; the broker stores exactly what ``apply_async`` would have sent.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from lab.experiments.bench.raw import CapturedMessage, _publish_kwargs
from worker.topology import DEFAULT_QUEUE


def usage(node: Any) -> dict[str, Any]:
    """{"rss_bytes", "cpu_seconds"} of a broker node (None if it cannot be read)."""
    try:
        return node.resource_usage()
    except Exception:  # noqa: BLE001 - a broker that is gone has no usage
        return {"rss_bytes": None, "cpu_seconds": None}


def per_10k(before: dict[str, Any] | None, after: dict[str, Any] | None, tasks: int) -> dict[str, Any]:
    """CPU seconds and RSS growth per 10k tasks between two samples."""
    if not before or not after or tasks <= 0 or before.get("cpu_seconds") is None or after.get("cpu_seconds") is None:
        return {"cpu_s_per_10k": None, "rss_growth_bytes_per_10k": None}
    scale = 10_000 / tasks
    return {
        "cpu_s_per_10k": round((after["cpu_seconds"] - before["cpu_seconds"]) * scale, 4),
        "rss_growth_bytes_per_10k": int((after["rss_bytes"] - before["rss_bytes"]) * scale),
    }


def fresh_redis_payloads(message: CapturedMessage, count: int) -> list[bytes]:
    import json

    envelope = json.loads(message.payload)
    tag = envelope.get("properties", {}).get("delivery_tag")
    base = message.payload
    out = []
    for _ in range(count):
        payload = base.replace(message.task_id.encode(), str(uuid.uuid4()).encode())
        if tag:
            payload = payload.replace(str(tag).encode(), str(uuid.uuid4()).encode())
        out.append(payload)
    return out


def fill_backlog(
    broker: str, url: str, message: CapturedMessage, count: int, queue: str = DEFAULT_QUEUE, batch: int = 1000
) -> float:
    """Put ``count`` noop messages on ``queue`` (the broker's bench vendor's way); returns the seconds it took."""
    from lab.experiments.bench.vendors import bench_vendor  # the vendors import this module

    started = time.perf_counter()
    bench_vendor(broker).fill(url, message, count, queue, batch)
    return time.perf_counter() - started


def fill_redis(url: str, message: CapturedMessage, count: int, queue: str = DEFAULT_QUEUE, batch: int = 1000) -> None:
    """Pipelined LPUSH onto the list the captured message came from."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=60)
    try:
        for i in range(0, count, batch):
            pipe = client.pipeline(transaction=False)
            for payload in fresh_redis_payloads(message, min(batch, count - i)):
                pipe.lpush(message.redis_key or queue, payload)
            pipe.execute()
    finally:
        client.close()


def fill_amqp(url: str, message: CapturedMessage, count: int, queue: str = DEFAULT_QUEUE, batch: int = 1000) -> None:
    """Persistent messages to the queue's exchange, ``batch`` confirms in flight."""
    _fill_amqp(url, message, count, queue, window=batch)


def _fill_amqp(url: str, message: CapturedMessage, count: int, queue: str, window: int) -> None:
    import amqp
    from kombu import Connection

    kwargs = _publish_kwargs(message)
    properties = {k: v for k, v in kwargs.items() if v is not None and k != "headers"}
    with Connection(url) as conn:
        client: amqp.Connection = conn.connection
        channel = client.channel()
        channel.confirm_select()
        confirmed = 0

        def on_ack(delivery_tag: int, multiple: bool) -> None:
            nonlocal confirmed
            confirmed = delivery_tag if multiple else confirmed + 1

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_ack)
        for sent in range(1, count + 1):
            task_id = str(uuid.uuid4())
            headers = dict(kwargs["headers"], id=task_id, root_id=task_id)
            msg = amqp.Message(message.payload, **dict(properties, correlation_id=task_id), application_headers=headers)
            # Celery's exchange for a work queue has the queue's name.
            channel._basic_publish(msg, exchange=queue, routing_key=queue)
            while sent - confirmed >= window:
                client.drain_events(timeout=30)
        while confirmed < count:
            client.drain_events(timeout=30)
        channel.close()


def backlog_memory(
    node: Any, broker: str, url: str, message: CapturedMessage, count: int, depth: Any, settle: float = 2.0
) -> dict[str, Any]:
    """RSS of the broker before and with ``count`` noop tasks waiting (then purged)."""
    depth.purge()
    time.sleep(0.5)
    before = usage(node)
    from lab.experiments.bench.vendors import bench_vendor  # the vendors import this module

    used_memory = bench_vendor(broker).used_memory
    redis_before = used_memory(url) if used_memory else None
    fill_s = fill_backlog(broker, url, message, count)
    time.sleep(settle)
    held = depth()
    after = usage(node)
    redis_after = used_memory(url) if used_memory else None
    depth.purge()
    out: dict[str, Any] = {
        "tasks": count,
        "held": held,
        "fill_seconds": round(fill_s, 3),
        "message_bytes": message.size,
        "rss_before_bytes": before["rss_bytes"],
        "rss_with_backlog_bytes": after["rss_bytes"],
        "rss_growth_bytes": None,
        "bytes_per_task": None,
    }
    if before["rss_bytes"] is not None and after["rss_bytes"] is not None:
        growth = after["rss_bytes"] - before["rss_bytes"]
        out["rss_growth_bytes"] = growth
        out["bytes_per_task"] = round(growth / count, 1)
    if redis_before is not None and redis_after is not None:
        out["redis_used_memory_growth_bytes"] = redis_after - redis_before
    return out


def redis_used_memory(url: str) -> int | None:
    """Redis' own ``used_memory`` (INFO memory), None if it cannot be read."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    except Exception:  # noqa: BLE001
        return None
    finally:
        client.close()
