"""Delayed tasks on RabbitMQ, held by the broker: kombu's native delayed delivery ladder, on classic
and quorum queues alike.

With acks_late, stock Celery keeps a countdown/ETA task unacked in the worker that received it until
it is due, which ``consumer_timeout`` bounds (and a restart hands every waiting task back at once).
Celery >= 5.5 avoids that for quorum queues with *native delayed delivery*: 28 queues
``celery_delayed_0`` .. ``_27`` whose TTLs are 2^0 .. 2^27 s, dead-lettering into each other; a
message's routing key spells its delay in binary (``kombu.transport.native_delayed_delivery.
calculate_routing_key``), so it waits 2^k s in each level whose bit is set and leaves the last one
through the exchange ``celery_delayed_delivery`` when it is due. Every message in one level waits
the same TTL, so the queue's head is always the next to expire: no message waits behind a later one.

Celery applies it only to quorum queues bound to topic or fanout exchanges, and brokerstack's work
queues are on direct exchanges (Celery's convention; changing the type of an exchange a deployment
has already declared is a PRECONDITION_FAILED). So brokerstack routes delayed publishes itself, on
both queue types, into the same ladder (declared by kombu's own function, with the queue type of the
work queues), and binds each work queue directly to the delivery exchange by its routing key.

Declaring the ladder takes over a hundred broker round trips (seconds for quorum queues on a busy
broker), so it is done in full where time is no issue: by every worker at start (``DeclareLadder``)
and by the API at start (``RabbitMQDeadLetterStore.ensure_declared``), and it ends by declaring a
marker exchange. A producer checks for the marker once per connection (one round trip; again after
a reconnect, in case the broker lost everything) and declares in full only if it is missing, so it
never publishes into a ladder that is not there.

Delays shorter than a second, and publishes whose destination is not a work queue, go the ordinary
way (the worker holds such a task until it is due). Quorum ladder queues dead-letter at-least-once
(a hop is never lost, at worst repeated: the worker's ledger counts it); classic queues dead-letter
at-most-once, as RabbitMQ documents, and a broker killed while tasks wait can lose or repeat some
(the ``delayed`` chaos scenario counts them). A quorum ladder beside classic work queues was tried
and did worse: after a restart RabbitMQ 4.0 stranded the dead-lettered messages in the ladder
("Cannot forward any dead-letter messages from source quorum queue", rabbitmq-server#12625) while
the classic targets recovered; with quorum work queues it lost nothing.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from celery import Celery, bootsteps
from celery.app.amqp import AMQP
from celery.signals import task_received
from kombu import Connection, Queue
from kombu.common import Broadcast
from kombu.transport.native_delayed_delivery import (
    CELERY_DELAYED_DELIVERY_EXCHANGE,
    MAX_LEVEL,
    MAX_NUMBER_OF_BITS_TO_USE,
    calculate_routing_key,
    declare_native_delayed_delivery_exchanges_and_queues,
    level_name,
)

logger = logging.getLogger(__name__)

#: The longest delay the ladder can hold (seconds): one bit per level.
LADDER_MAX_DELAY = 2**MAX_NUMBER_OF_BITS_TO_USE - 1
#: The ladder's queues (and exchanges of the same names), shortest TTL first.
LADDER_QUEUES = tuple(level_name(level) for level in range(MAX_LEVEL + 1))
#: Where a delayed message enters the ladder, and the exchange it leaves it through when due.
LADDER_ENTRY = level_name(MAX_LEVEL)
DELIVERY_EXCHANGE = CELERY_DELAYED_DELIVERY_EXCHANGE
#: The ladder's granularity: a delay is a whole number of seconds, so shorter ones are not worth a trip.
MIN_LADDER_DELAY = 1
#: Declared (durable, nothing bound to it) once the ladder and the work queues' bindings are: its
#: presence on the broker says they are there.
LADDER_MARKER = "brokerstack.delayed-delivery-ladder"
#: Recorded in a connection's ``declared_entities`` once the marker was seen on it; kombu clears that
#: set whenever the connection is re-established.
_SEEN_MARK = "brokerstack.delayed-delivery-ladder-seen"
#: The delay prefix of a routing key that went through the ladder (one bit per level).
_DELAY_PREFIX = re.compile(rf"^(?:[01]\.){{{MAX_NUMBER_OF_BITS_TO_USE}}}")
#: Celery and kombu warn that tasks for direct exchanges are held by the worker until due on quorum
#: queues; brokerstack routes them through the ladder itself, so the warning would be false.
_FALSE_WARNINGS = {
    "celery.app.base": "Direct exchanges are not supported with native delayed delivery",
    "kombu.transport.native_delayed_delivery": "and native delayed delivery do not support direct exchanges",
}


def ladder_routing_key(routing_key: str) -> str:
    """``routing_key`` without the delay a trip through the ladder prefixed it with."""
    return _DELAY_PREFIX.sub("", routing_key, count=1)


def strip_ladder_prefix(sender: Any = None, request: Any = None, **_: Any) -> None:
    """``task_received``: a task that came through the ladder shows the routing key it was published
    with, like any other task, not the one carrying its delay: the dead-letter hooks record that key
    as the message's queue (a replay publishes back to it) and a task may read it. A retry still
    finds its queue (the delivery exchange binds ``#.<key>``, which matches the bare key)."""
    info = getattr(request, "delivery_info", None)
    if info and info.get("exchange") == DELIVERY_EXCHANGE and info.get("routing_key"):
        info["routing_key"] = ladder_routing_key(info["routing_key"])


def due_in(headers: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds until a task message is due, from its ``eta`` header (None: no ETA)."""
    eta = headers.get("eta")
    if not eta:
        return None
    when = eta if isinstance(eta, datetime) else datetime.fromisoformat(str(eta))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - (time.time() if now is None else now)


def work_queues_of(app: Celery) -> list[Queue]:
    return [queue for queue in app.amqp.queues.values() if not isinstance(queue, Broadcast)]


def declare_ladder(app: Celery, connection: Connection) -> None:
    """Declare the ladder, bind every work queue to its delivery exchange, then the marker."""
    channel = connection.channel()
    try:
        declare_native_delayed_delivery_exchanges_and_queues(
            _OneChannel(channel),  # type: ignore[arg-type]
            app.conf.broker_native_delayed_delivery_queue_type,
        )
        for queue in work_queues_of(app):
            queue(channel).declare()
            channel.queue_bind(
                queue=queue.name, exchange=DELIVERY_EXCHANGE, routing_key=f"#.{queue.routing_key or queue.name}"
            )
        channel.exchange_declare(LADDER_MARKER, "fanout", durable=True)
    finally:
        connection.maybe_close_channel(channel)


def ensure_ladder(app: Celery, connection: Connection) -> None:
    """Make sure the ladder is there before a delayed publish: one look per connection."""
    if _SEEN_MARK in connection.declared_entities:
        return
    channel = connection.channel()
    try:
        channel.exchange_declare(LADDER_MARKER, "fanout", durable=True, passive=True)
        seen = True
    except connection.channel_errors:
        seen = False  # NOT_FOUND, which also closed the channel
    finally:
        connection.maybe_close_channel(channel)
    if not seen:
        declare_ladder(app, connection)
    connection.declared_entities.add(_SEEN_MARK)


def delayed_depth(app: Celery) -> int:
    """How many messages wait in the ladder (for every queue of the virtual host). The levels are
    read from the entry down: a message only ever moves to a shorter level, so one that moves while
    they are read one by one is counted (at most twice), never missed as it would be read upwards.

    A passive declare reports a queue's *ready* messages only: a dead letter a quorum ladder queue
    holds but cannot forward (rabbitmq-server#12625: it counts in the queue's total, not in ready or
    unacked) is not counted here. Only the broker's own totals (rabbitmqctl / the management API's
    ``messages``, figures a quorum queue publishes on a timer) show it, and they are not reachable
    over AMQP: the ``delayed`` chaos scenario records them beside this count (``held_*``)."""
    with app.connection_for_write() as connection:
        ensure_ladder(app, connection)
        channel = connection.channel()
        try:
            levels = reversed(LADDER_QUEUES)
            return sum(int(channel.queue_declare(name, passive=True).message_count) for name in levels)
        finally:
            connection.maybe_close_channel(channel)


class _OneChannel:
    """What kombu's ladder declaration needs of a connection (``channel()``), on a channel we close:
    kombu's function opens a channel of its own and leaves it open."""

    def __init__(self, channel: Any) -> None:
        self._channel = channel

    def channel(self) -> Any:
        return self._channel


class DeclareLadder(bootsteps.StartStopStep):
    """Every worker declares the ladder in full when it starts (or reconnects), so bindings lost
    with a deleted and re-created work queue come back with the next worker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        # The worker that receives tasks through the ladder shows them their own routing key
        # (connecting the same receiver again is a no-op).
        task_received.connect(strip_ladder_prefix, weak=False)

    def start(self, c: Any) -> None:
        try:
            declare_ladder(c.app, c.connection)
        except c.connection.connection_errors + c.connection.channel_errors:
            # Producers still check for the ladder before each delayed publish.
            logger.warning("could not declare the delayed-delivery ladder at start", exc_info=True)


class _DropFalseWarning(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in str(record.msg)


def silence_false_warnings() -> None:
    for name, text in _FALSE_WARNINGS.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropFalseWarning) for f in target.filters):
            target.addFilter(_DropFalseWarning(text))


class DelayedDeliveryAMQP(AMQP):
    """Celery's AMQP layer, except that a task due a second or more from now is published into the
    ladder instead of its queue (``app.amqp_cls``: the seam between Celery's routing and kombu's
    publish, so retries with a countdown take the same way as the API's tasks)."""

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()
        app = self.app

        def send_task_message(
            producer: Any,
            name: str,
            message: Any,
            exchange: Any = None,
            routing_key: str | None = None,
            queue: Any = None,
            **kwargs: Any,
        ) -> Any:
            route = _ladder_route(app, producer, message.headers, exchange, routing_key, queue)
            if route is not None:
                ensure_ladder(app, producer.connection)
                exchange, routing_key, queue = LADDER_ENTRY, route, None
                kwargs["exchange_type"] = "topic"
            return send(producer, name, message, exchange=exchange, routing_key=routing_key, queue=queue, **kwargs)

        return send_task_message


def _ladder_route(
    app: Celery, producer: Any, headers: dict[str, Any], exchange: Any, routing_key: str | None, queue: Any
) -> str | None:
    """The ladder routing key for a task message, or None if it goes the ordinary way: not due for a
    second or more, not on RabbitMQ (the fast tier's in-memory transport), or not for a work queue."""
    if producer.connection.transport.driver_type != "amqp":
        return None
    delay = due_in(headers)
    if delay is None or delay < MIN_LADDER_DELAY:
        return None
    target = _target_queue(app, exchange, routing_key, queue)
    if target is None:
        return None
    return calculate_routing_key(int(delay), target.routing_key or target.name)


def _target_queue(app: Celery, exchange: Any, routing_key: str | None, queue: Any) -> Queue | None:
    queues = {q.name: q for q in work_queues_of(app)}
    if queue is not None:
        return queues.get(queue if isinstance(queue, str) else queue.name)
    exchange_name = getattr(exchange, "name", exchange)
    if exchange_name is None:
        return queues.get(app.amqp.default_queue.name)
    # A retry of a task that came through the ladder names the delivery exchange and the prefixed key.
    key = ladder_routing_key(routing_key or "")
    for candidate in queues.values():
        if (candidate.routing_key or candidate.name) == key and exchange_name in (
            "",
            DELIVERY_EXCHANGE,
            candidate.exchange.name,
        ):
            return candidate
    return None
