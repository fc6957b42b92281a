"""brokerstack's Redis transport: kombu's, with a delivery step that never holds a message outside
Redis, one priority scale with RabbitMQ, and doorbells for idle consumers.

kombu delivers a Redis message in two steps: ``BRPOP`` takes it off the queue, then a second round
trip records it in the ``unacked`` hash that makes acks_late and redelivery work. A worker or a
Redis that dies between the two loses that message whatever the AOF policy. Here one Lua script
(``fetch.lua``) takes up to the worker's prefetch window off the queues *and* records each message
as unacked, atomically. Acks are sent the moment they are made, as kombu sends them (one pipelined
round trip); an ack that cannot reach Redis is kept and sent with the next fetch or ack.

Idle consumers block on a per-queue doorbell list that publishers ring along with each message; a
silent doorbell still means a look every ``brpop_timeout`` (1 s), so messages that arrive without a
ring (stock kombu producers, restored messages) are found too.

Delayed messages (a Celery task with an ``eta`` header in the future: countdown or ETA) wait in
Redis, not in a worker: a publish puts them into the queue's delayed sorted set, scored by due time,
and every consumer moves the due ones onto their lists with one Lua script (``delayed.lua``) before
it fetches, at the latest every ``DELAYED_CHECK_INTERVAL`` and otherwise when the earliest one is
due. A worker therefore only ever receives due tasks; nothing about a waiting task lives in a
worker's memory, and no single process has to survive for it to be delivered.

What this relies on in kombu (5.7): the virtual channel's consume/deliver loop, ``QoS`` bookkeeping
(``_delivered``, ``restore_unacked_once`` at channel close), the unacked hash/index layout and
``restore_visible``, ``_q_for_pri`` list naming, ``MultiChannelPoller`` driving ``_brpop_start`` /
``_brpop_read``, and ``GlobalKeyPrefixMixin`` for prefixed clients.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from base64 import b64encode
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import NoScriptError

from worker.backends import SentinelTLSConnection, TLSConnection
from worker.brokers.redis.errors import UNWRITABLE_ERRORS
from worker.topology import PRIORITY_MAX, PRIORITY_MIN

logger = logging.getLogger(__name__)

#: One Redis list per priority level and queue, so every step of the 0..9 scale is distinct.
PRIORITY_STEPS = list(range(PRIORITY_MIN, PRIORITY_MAX + 1))

#: Where Celery finds the transports below (``broker_transport`` accepts a class path).
TRANSPORT_PATH = "worker.brokers.redis:Transport"
SENTINEL_TRANSPORT_PATH = "worker.brokers.redis:SentinelTransport"

#: Most messages one fetch takes when the consumer sets no prefetch limit.
MAX_FETCH = 100
#: One fetch stops taking messages once they add up to this many bytes: a script blocks Redis while
#: it runs, and moving a payload through Lua costs ~0.5-1.5 ms per 256 KB (measured on 2 cores), so
#: a batch of large messages is split into fetches of a few milliseconds each.
MAX_FETCH_BYTES = 1 << 20
#: A doorbell holds at most this many rings; more would only mean spurious wake-ups.
DOORBELL_MAX = 1000
DOORBELL_KEY = "_brokerstack.doorbell.{queue}"
#: Acks kept for resending while Redis is unreachable; older ones are dropped (their messages run
#: again after the visibility timeout, as any lost ack does).
MAX_UNSENT_ACKS = 10_000

#: A message whose payload is not a kombu message (not JSON, or not an object with properties) is
#: handed to the consumer under this content type, which no one accepts: Celery's consumer then
#: dead-letters it as undecodable (worker.consumer) instead of the transport dropping it.
UNDECODABLE_CONTENT_TYPE = "application/x-brokerstack-undecodable"

FETCH_SCRIPT = (Path(__file__).with_name("fetch.lua")).read_text()
FETCH_SHA = hashlib.sha1(FETCH_SCRIPT.encode()).hexdigest()
DELAYED_SCRIPT = (Path(__file__).with_name("delayed.lua")).read_text()
DELAYED_SHA = hashlib.sha1(DELAYED_SCRIPT.encode()).hexdigest()

#: A queue's delayed messages wait in this sorted set, scored by due time (see delayed.lua).
DELAYED_KEY = "_brokerstack.delayed.{queue}"
#: A consumer looks for due delayed messages at least this often (seconds), besides when the
#: earliest one it knows of is due: another producer may have added an earlier one meanwhile.
DELAYED_CHECK_INTERVAL = 1.0
#: Most delayed messages one move takes (the byte budget is MAX_FETCH_BYTES): a backlog that came
#: due at once (Redis was down) is moved in steps of a few milliseconds, not in one long script.
MAX_MOVE = 1000
#: What a publish of a delayed message rings the doorbell with: an idle consumer that hears it
#: looks at the delayed sets at once, so it learns of an earlier due time than it knew.
DELAYED_RING = "d"
#: Shortest wait for a doorbell when a delayed message is about due: a BRPOP timeout of 0 would
#: block for ever.
MIN_WAIT = 0.01

#: Green pools (gevent, eventlet) run Celery's loop without a hub: it polls the consumer's sockets
#: for up to 2 s, and an ack made in a task's greenlet frees a slot of the prefetch window without
#: waking that poll. One fetch fills the whole window, so a backlog went at one window per 2 s (50
#: tasks/s with --concurrency 100, measured by ``brokerstack bench``). While a window is full the
#: poll waits at most this long, so a freed slot is filled again within it.
WINDOW_FULL_WAIT = 0.01

#: The transport's priority orders (REDIS_PRIORITY_ORDER): which end of 0..9 is urgent.
PRIORITY_ORDERS = ("brokerstack", "kombu")


def doorbell_key(queue: str) -> str:
    return DOORBELL_KEY.format(queue=queue)


def delayed_key(queue: str) -> str:
    return DELAYED_KEY.format(queue=queue)


def due_at(message: dict) -> float | None:
    """When a message is due (seconds since the epoch), from Celery's ``eta`` header (protocol 2);
    None for a message without one. A naive ETA is UTC, as Celery's worker reads it."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta or not isinstance(eta, str):
        return None
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def delayed_member(list_key: str, payload: str) -> str:
    """A delayed set's member: the list the message goes to when due, then the payload."""
    return f"{len(list_key.encode())}:{list_key}{payload}"


class _UnsentAcks:
    """Delivery tags whose ack could not reach Redis, per Redis (they outlive the channel and the
    connection that failed). Tags are unique per delivery, so sending one late or twice removes
    nothing but its own record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tags: dict[str, list[str]] = {}

    def put(self, where: str, tags: list[str]) -> None:
        if not tags:
            return
        with self._lock:
            kept = self._tags.setdefault(where, [])
            kept.extend(tags)
            del kept[:-MAX_UNSENT_ACKS]

    def take(self, where: str) -> list[str]:
        with self._lock:
            return self._tags.pop(where, [])

    def waiting(self, where: str) -> bool:
        return bool(self._tags.get(where))


UNSENT_ACKS = _UnsentAcks()


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, except that delivery is recorded by the fetch script and unsent acks are
    kept and resent."""

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self._send_removal(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        else:
            self._send_removal(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def _send_removal(self, delivery_tag: str) -> None:
        where = self.channel.unsent_acks_key
        tags = [delivery_tag, *UNSENT_ACKS.take(where)]
        try:
            with self.channel.ack_client().pipeline() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        except self.channel.connection_errors as exc:
            UNSENT_ACKS.put(where, tags)
            logger.warning("Redis unreachable, %d ack(s) kept to resend with the next fetch: %r", len(tags), exc)

    def restore_unacked(self, client: Any = None) -> Any:
        """Give back what this channel holds unacked when it closes, except the messages of tasks
        still running in this worker. The channel closes on a lost connection too, and Redis keeps
        the unacked record across reconnects, so a running task is acked when it finishes
        (``worker_cancel_long_running_tasks_on_connection_loss`` is off on Redis); giving its
        message back here would run it a second time at once (kombu's transport does: measured in
        tests/integration/test_redis_delivery.py). If the worker dies instead, the visibility
        timeout gives it back."""
        for tag in _tags_of_running_tasks() & set(self._delivered):
            del self._delivered[tag]
        return super().restore_unacked(client)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        def restore_transaction(pipe: Any) -> None:
            entry = pipe.hget(self.unacked_key, tag)
            pipe.multi()
            self._remove_from_indices(tag, pipe)
            if entry:
                self.channel.restore_unacked_entry(bytes_to_str(entry), pipe, leftmost)

        with self.channel.conn_or_acquire(client) as client:
            client.transaction(restore_transaction, self.unacked_key)


class BrokerstackChannel:
    """What brokerstack adds to kombu's Redis channel (plain or Sentinel): mixed in before it.

    Priority: kombu's Redis transport pops priority 0 first, RabbitMQ delivers the highest number
    first. With the ``brokerstack`` order (default) users get one scale, 9 most urgent, everywhere:
    the number a message carries stays the user's number and only the list it goes to is reversed.
    The ``kombu`` order keeps kombu's lists for fleets that share a Redis with stock Celery clients.
    """

    QoS = QoS
    #: REDIS_PRIORITY_ORDER (transport option ``brokerstack_priority_order``).
    brokerstack_priority_order = "brokerstack"

    # Provided by kombu's channel.
    global_keyprefix: str
    unacked_key: str
    unacked_index_key: str
    priority_steps: list[int]
    brpop_timeout: float
    sep: str
    connection: Any
    connection_errors: tuple[type[BaseException], ...]
    pool: Any
    client: Any
    qos: Any
    active_queues: list[str]
    _queue_cycle: Any
    _in_poll: Any
    _brpop_sent_at: Any
    _expires: dict[str, int]
    _tag_to_queue: dict[str, str]
    #: The one client for synchronous commands (``_create_client``) and the one for acks after close.
    _sync_client: Any = None
    _closed_ack_client: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.brokerstack_priority_order not in PRIORITY_ORDERS:
            raise ValueError(f"brokerstack_priority_order must be one of {PRIORITY_ORDERS}")
        #: Queues consumed without acks (Celery's reply queues): not recorded as unacked.
        self._untracked_queues: set[str] = set()
        #: The command in flight on the consumer connection: ("fetch", how many, acks it carries)
        #: or ("wait", 0, []).
        self._pending: tuple[str, int, list[str]] | None = None
        #: Fetch (rather than wait for a doorbell) next: at start, after a ring or a timeout, and
        #: after a full batch (there may be more).
        self._fetch_next = True
        #: When to look for due delayed messages next (time.time()); 0 means at the next fetch.
        self._next_move_at = 0.0
        #: Delivery tags are this channel's id, the fetch number and the message's place in it.
        self._tag_prefix = uuid.uuid4().hex
        self._fetches = 0
        #: Which Redis (and key space) this channel's acks belong to.
        uri = self.connection.client.as_uri(include_password=False)
        self.unsent_acks_key = f"{uri}|{self.global_keyprefix}|{self.unacked_key}"
        #: The pool acks go through. It outlives the channel: after a lost connection the channel
        #: is closed (and forgets its pools and transport) while tasks it delivered still run and
        #: must be acked when they finish. A disconnected redis-py pool reconnects when used.
        self._ack_pool = self.pool

    def ack_client(self) -> Any:
        """A client for acks, usable after the channel closed."""
        if not self.closed:  # type: ignore[attr-defined]
            return self._create_client()
        if self._closed_ack_client is None:
            self._closed_ack_client = self.Client(connection_pool=self._ack_pool)  # type: ignore[attr-defined]
        return self._closed_ack_client

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's channel builds a new redis-py client for every synchronous command (each ack, each
        event published), and a redis-py 8 client builds ~170 response callbacks when it is created:
        about a seventh of a solo worker's CPU per task with the defaults. A client holds no
        connection of its own (it borrows one from its pool per command, thread-safely), so one per
        pool serves them all; a new pool (after a reconnect) gets a new one."""
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool, cached = self.pool, self._sync_client
        if cached is None or cached.connection_pool is not pool:
            cached = self._sync_client = super()._create_client()  # type: ignore[misc]
        return cached

    # --- priority -------------------------------------------------------------------------------

    def _get_message_priority(self, message: dict, reverse: bool = False) -> int:
        if self.brokerstack_priority_order == "brokerstack":
            reverse = not reverse
        return super()._get_message_priority(message, reverse=reverse)  # type: ignore[misc]

    # --- publishing: every message rings its queue's doorbell ----------------------------------

    def _key_for(self, command: str, key: str) -> str:
        """``key`` as ``command`` must be given it through kombu's prefixing client, which prefixes
        the keys of some commands only (LPUSH and ZADD, not LTRIM or ZCARD): prefixed here if not."""
        if self.global_keyprefix and command.upper() not in kombu_redis.GlobalKeyPrefixMixin.PREFIXED_SIMPLE_COMMANDS:
            return self.global_keyprefix + key
        return key

    def _ring(self, queue: str, ring: Any = 1) -> list[tuple[Any, ...]]:
        """The commands that ring a queue's doorbell, bounded."""
        bell = doorbell_key(queue)
        return [("lpush", bell, ring), ("ltrim", self._key_for("ltrim", bell), 0, DOORBELL_MAX - 1)]

    def _put(self, queue: str, message: dict, **kwargs: Any) -> None:
        # kombu's _put, plus the ring, in the same round trip (or the same publish batch). A
        # message due later goes to the queue's delayed set instead of its list.
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))  # type: ignore[attr-defined]
        due = due_at(message)
        commands: list[tuple[Any, ...]]
        if due is not None and due > time.time():
            member = delayed_member(key, dumps(message))
            commands = [("zadd", delayed_key(queue), {member: due}), *self._ring(queue, DELAYED_RING)]
        else:
            commands = [("lpush", key, dumps(message)), *self._ring(queue)]
        if self._expires and queue in self._expires:
            commands += [
                ("pexpire", self._q_for_pri(queue, p), self._expires[queue])  # type: ignore[attr-defined]
                for p in self.priority_steps
            ]
        publish_batch = kwargs.pop("_publish_batch", None)
        if publish_batch is not None:
            for name, *args in commands:
                publish_batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()

    def _do_restore_message(
        self, payload: dict, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)  # type: ignore[misc]
        for queue in self._lookup(exchange, routing_key):  # type: ignore[attr-defined]
            for name, *args in self._ring(queue):
                getattr(pipe, name)(*args)

    def restore_unacked_entry(self, entry: str, pipe: Any, leftmost: bool) -> None:
        """Put an unacked record back on its queue (inside ``pipe``'s transaction). A record whose
        payload is not JSON (a producer other than kombu's) is put back as it was."""
        try:
            payload, exchange, routing_key = loads(entry)
            if not isinstance(payload, dict):
                raise ValueError("not a kombu message")
        except ValueError:
            raw, queue = _split_fetch_entry(entry)
            if raw is None:
                logger.critical("dropping an unacked record that is neither kombu's nor brokerstack's: %r", entry[:200])
                return
            (pipe.lpush if leftmost else pipe.rpush)(self._q_for_pri(queue, PRIORITY_MIN), raw)  # type: ignore[attr-defined]
            for name, *args in self._ring(queue):
                getattr(pipe, name)(*args)
            return
        self._do_restore_message(payload, exchange, routing_key, pipe, leftmost)

    # --- consuming ----------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._untracked_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        if queue is not None:
            self._untracked_queues.discard(queue)
        return super()._basic_cancel(consumer_tag)  # type: ignore[misc]

    def _fetch_arguments(self, queues: list[str], want: int) -> tuple[list[str], list[Any], list[str]]:
        """KEYS and ARGV of fetch.lua (see there), and the unsent acks they carry."""
        lists = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]  # type: ignore[attr-defined]
        tails = ["" if queue in self._untracked_queues else f',"",{dumps(queue)}]' for _, queue in lists]
        acks = UNSENT_ACKS.take(self.unsent_acks_key)
        self._fetches += 1
        prefix = f"{self._tag_prefix}.{self._fetches}."
        keys = [
            self.global_keyprefix + key for key in (self.unacked_key, self.unacked_index_key, *(k for k, _ in lists))
        ]
        return keys, [want, time.time(), prefix, MAX_FETCH_BYTES, len(acks), *acks, *tails], acks

    def _want(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        return max(1, min(estimate or MAX_FETCH, MAX_FETCH))

    def _script_client(self) -> Any:
        """A client that sends script calls as they are: their keys are prefixed already."""
        return redis.Redis(connection_pool=self.pool)

    # --- delayed messages ----------------------------------------------------------------------

    def _move_due(self, queues: list[str], force: bool = False) -> None:
        """Move the due delayed messages of ``queues`` onto their lists (delayed.lua), if it is
        time to look; learn when the earliest one left is due."""
        now = time.time()
        queues = [queue for queue in queues if queue not in self._untracked_queues]
        if not queues or (now < self._next_move_at and not force):
            return
        keys = [
            self.global_keyprefix + key
            for key in (
                *(delayed_key(queue) for queue in queues),
                *(doorbell_key(queue) for queue in queues),
                *(self._q_for_pri(queue, PRIORITY_MIN) for queue in queues),  # type: ignore[attr-defined]
            )
        ]
        args = [repr(now), MAX_MOVE, MAX_FETCH_BYTES, self.global_keyprefix, DOORBELL_MAX]
        client = self._script_client()
        try:
            moved, earliest = client.evalsha(DELAYED_SHA, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or flushed Redis forgot the script: load it once, not send it every time.
            client.script_load(DELAYED_SCRIPT)
            moved, earliest = client.evalsha(DELAYED_SHA, len(keys), *keys, *args)
        self._next_move_at = now + DELAYED_CHECK_INTERVAL
        if earliest:
            self._next_move_at = min(self._next_move_at, float(earliest))
        if moved:
            self._fetch_next = True

    def _wait_timeout(self) -> float:
        """How long an idle consumer waits for a ring: until the next look at the delayed sets."""
        return max(MIN_WAIT, min(self.brpop_timeout, self._next_move_at - time.time()))

    def _delayed_size(self, queue: str, client: Any) -> int:
        return int(client.zcard(self._key_for("zcard", delayed_key(queue))) or 0)

    # --- consuming, continued -------------------------------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._move_due(queues)
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if self._fetch_next or UNSENT_ACKS.waiting(self.unsent_acks_key):
            want = self._want()
            keys, args, acks = self._fetch_arguments(queues, want)
            self._pending = ("fetch", want, acks)
            command = ["EVALSHA", FETCH_SHA, len(keys), *keys, *args]
        else:
            self._pending = ("wait", 0, [])
            bells = [self.global_keyprefix + doorbell_key(queue) for queue in queues]
            command = ["BRPOP", *bells, timeout or self._wait_timeout()]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        kind, want, acks = self._pending or ("wait", 0, [])
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVALSHA" if kind == "fetch" else "BRPOP", **options
                )
            except self.connection_errors:
                UNSENT_ACKS.put(self.unsent_acks_key, acks)  # the script may not have run
                self.client.connection.disconnect()
                raise
            except NoScriptError:
                # A restarted or flushed Redis forgot the script: load it, look again next time.
                UNSENT_ACKS.put(self.unsent_acks_key, acks)
                self._script_client().script_load(FETCH_SCRIPT)
                self._fetch_next = True
                raise kombu_redis.Empty() from None
            if kind == "wait":
                # A ring, or a quiet second: either way, look at the queues now, and at the delayed
                # sets too if the ring was for a delayed message (it may be due before any we knew).
                self._fetch_next = True
                if reply and bytes_to_str(reply[1]) == DELAYED_RING:
                    self._next_move_at = 0.0
                raise kombu_redis.Empty()
            more, *items = reply or [0]
            delivered = len(items) // 3
            self._fetch_next = bool(more) or delivered >= want
            if not delivered:
                raise kombu_redis.Empty()
            for index in range(0, len(items), 3):
                self._deliver_fetched(items[index], items[index + 1], items[index + 2])
            return True
        finally:
            self._in_poll = None
            self._pending = None
            self._flush_brpop_reauth()  # type: ignore[attr-defined]

    def _fetched_payload(self, key: bytes, tag: bytes, item: bytes) -> tuple[str, dict | None]:
        """The queue a fetched message came from and its payload under the delivery tag the fetch
        recorded (None: an undecodable message on a no-ack queue, which has nowhere to go)."""
        queue = bytes_to_str(key)[len(self.global_keyprefix) :].rsplit(self.sep, 1)[0]
        delivery_tag = bytes_to_str(tag)
        try:
            payload = loads(bytes_to_str(item))
            if not isinstance(payload, dict) or not isinstance(payload.get("properties"), dict):
                raise ValueError("not a kombu message: no properties")
        except ValueError as exc:
            if not delivery_tag:
                logger.error("dropping an undecodable message from no-ack queue %s: %s", queue, exc)
                return queue, None
            logger.error("undecodable message on %s (%s): handing it on to be dead-lettered", queue, exc)
            payload = _undecodable_payload(item, queue)
        if delivery_tag:
            payload["properties"]["delivery_tag"] = delivery_tag
        return queue, payload

    def _deliver_fetched(self, key: bytes, tag: bytes, item: bytes) -> None:
        queue, payload = self._fetched_payload(key, tag, item)
        self._queue_cycle.rotate(queue)
        if payload is not None:
            self.connection._deliver(payload, queue)

    def _get(self, queue: str, timeout: float | None = None) -> dict:
        """Synchronous get (basic_get): the same atomic take-and-record, one message."""
        self._move_due([queue], force=True)
        keys, args, acks = self._fetch_arguments([queue], 1)
        client = self._script_client()
        try:
            try:
                items = client.evalsha(FETCH_SHA, len(keys), *keys, *args)
            except NoScriptError:
                items = client.eval(FETCH_SCRIPT, len(keys), *keys, *args)
        except self.connection_errors:
            UNSENT_ACKS.put(self.unsent_acks_key, acks)
            raise
        if len(items) < 4:
            raise kombu_redis.Empty()
        _, payload = self._fetched_payload(*items[1:4])
        if payload is None:
            raise kombu_redis.Empty()
        return payload

    def _purge(self, queue: str) -> int:
        # A queue's delayed messages are its messages too: purging it drops them with the rest.
        with self.conn_or_acquire() as client, client.pipeline() as pipe:  # type: ignore[attr-defined]
            pipe.zcard(self._key_for("zcard", delayed_key(queue))).delete(delayed_key(queue))
            delayed, _ = pipe.execute()
        return int(super()._purge(queue)) + int(delayed or 0)  # type: ignore[misc]

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, *args, **kwargs)  # type: ignore[misc]
        with self.conn_or_acquire(client=kwargs.get("client")) as client:  # type: ignore[attr-defined]
            client.delete(delayed_key(queue))

    def delayed_depth(self, queues: list[str]) -> int:
        """How many delayed messages of ``queues`` wait in Redis (not yet due, or due and not moved)."""
        with self.conn_or_acquire() as client:  # type: ignore[attr-defined]
            return sum(self._delayed_size(queue, client) for queue in queues)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)  # type: ignore[misc]
        if message is not None and no_ack:
            self.qos._remove_from_indices(message.delivery_tag).execute()
        return message


def _tags_of_running_tasks() -> set[str]:
    """Delivery tags of the tasks this process is running (empty outside a Celery worker)."""
    from celery.worker import state

    tags = set()
    for request in list(state.active_requests):
        message = getattr(request, "message", None)
        if message is not None and message.delivery_tag is not None:
            tags.add(message.delivery_tag)
    return tags


def _undecodable_payload(item: bytes, queue: str) -> dict[str, Any]:
    """A kombu payload that carries ``item`` as its body, for the consumer's decode-error path."""
    return {
        "body": b64encode(item).decode(),
        "content-encoding": "binary",
        "content-type": UNDECODABLE_CONTENT_TYPE,
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": PRIORITY_MIN,
        },
    }


def _split_fetch_entry(entry: str) -> tuple[str | None, str]:
    """(payload, queue) of an unacked record written by fetch.lua, whatever the payload is."""
    head, sep, tail = entry.rpartition(',"",')
    if not sep or not head.startswith("[") or not tail.endswith("]"):
        return None, ""
    try:
        queue = loads(tail[:-1])
    except ValueError:
        return None, ""
    return head[1:], queue


_OPTIONS = ("brokerstack_priority_order",)


# kombu types each from_transport_options as a tuple of its exact length, so a longer one "differs".
class Channel(BrokerstackChannel, kombu_redis.Channel):
    from_transport_options = kombu_redis.Channel.from_transport_options + _OPTIONS  # type: ignore[assignment]
    # A rediss:// URL whose server does not speak TLS fails with one clear line, not a bare timeout.
    connection_class_ssl = TLSConnection


class SentinelChannel(BrokerstackChannel, kombu_redis.SentinelChannel):
    from_transport_options = kombu_redis.SentinelChannel.from_transport_options + _OPTIONS  # type: ignore[assignment]
    connection_class_ssl = SentinelTLSConnection  # type: ignore[assignment]  # kombu types it as its own class


class WindowPoller(kombu_redis.MultiChannelPoller):
    """kombu's poller, whose blocking get (the loop of green pools) waits at most WINDOW_FULL_WAIT
    while a consuming channel's prefetch window is full. Event-loop pools never call get: their
    acks wake the hub."""

    def get(self, callback: Any, timeout: float | None = None) -> Any:
        if any(channel.active_queues and not channel.qos.can_consume() for channel in self._channels):
            timeout = WINDOW_FULL_WAIT if timeout is None else min(timeout, WINDOW_FULL_WAIT)
        return super().get(callback, timeout=timeout)


class _WindowPollerMixin:
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cycle = WindowPoller()


class Transport(_WindowPollerMixin, kombu_redis.Transport):
    Channel = Channel
    # A node that will not take writes (READONLY, NOREPLICAS, MASTERDOWN) is a lost connection to
    # the consumer: it reconnects (through Sentinel, to the primary of now) instead of exiting with
    # "Unrecoverable error". Class attributes: Celery reads them from the class.
    connection_errors = (*kombu_redis.Transport.connection_errors, *UNWRITABLE_ERRORS)


class SentinelTransport(_WindowPollerMixin, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    connection_errors = Transport.connection_errors
