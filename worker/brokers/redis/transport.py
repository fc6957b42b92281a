"""Redis as Celery's broker: kombu's Redis transport, with brokerstack's priority order and a
delivery path that never holds a message outside Redis.

kombu delivers a Redis message in two steps: ``BRPOP`` takes it off the queue, then a second round
trip records it in the ``unacked`` hash that makes acks_late and redelivery work. A worker or a
Redis that dies between the two loses that message whatever the AOF policy (the chaos runs
count it), and every task pays both round trips. Here one Lua script takes up to the worker's
prefetch window off the queues *and* records each message as unacked, atomically (Redis replicates
and fsyncs a script's effects as one transaction). Idle workers block on a per-queue doorbell list
that publishers ring along with each message; a silent doorbell still means a look every
``brpop_timeout`` (1 s), so messages that arrive without a ring (requeued ones, other producers)
are found too.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from worker.brokers.base import BrokerProfile
from worker.topology import PRIORITY_MAX, PRIORITY_MIN

#: One Redis list per priority level and queue, so every step of the 0..9 scale is distinct.
PRIORITY_STEPS = list(range(PRIORITY_MIN, PRIORITY_MAX + 1))

#: Where Celery finds the transport below (``broker_transport`` accepts a class path).
TRANSPORT_PATH = "worker.brokers.redis:Transport"

#: Most messages one fetch takes when the consumer sets no prefetch limit.
MAX_FETCH = 100
#: A doorbell holds at most this many rings; more would only mean spurious wake-ups.
DOORBELL_MAX = 1000
DOORBELL_KEY = "_brokerstack.doorbell.{queue}"

#: KEYS: unacked hash, unacked index, then the queue lists in the order to take from them.
#: ARGV: how many to take, now, the number of acks N, the N delivery tags acked since the last
#: fetch (removed first: acks ride along with the next fetch instead of costing a round trip
#: each), then per queue list "1" to record its messages as unacked ("0" for a no-ack consumer,
#: whose messages count as acked on delivery).
#: Returns list, payload, list, payload, ... The unacked entry is ``[payload, exchange,
#: routing_key]`` exactly as kombu writes it, built by string concatenation so the payload's JSON
#: is kept byte for byte.
FETCH_SCRIPT = """
local want = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local acks = tonumber(ARGV[3])
for a = 4, 3 + acks do
  redis.call('ZREM', KEYS[2], ARGV[a])
  redis.call('HDEL', KEYS[1], ARGV[a])
end
local flags = 3 + acks - 2
local out = {}
for i = 3, #KEYS do
  while #out < want * 2 do
    local item = redis.call('RPOP', KEYS[i])
    if not item then break end
    if ARGV[flags + i] == '1' then
      local ok, message = pcall(cjson.decode, item)
      if ok and type(message) == 'table' and type(message.properties) == 'table'
          and message.properties.delivery_tag then
        local tag = message.properties.delivery_tag
        local info = message.properties.delivery_info
        if type(info) ~= 'table' then info = {} end
        redis.call('HSET', KEYS[1], tag, '[' .. item .. ',' .. cjson.encode(info.exchange or '') .. ','
          .. cjson.encode(info.routing_key or '') .. ']')
        redis.call('ZADD', KEYS[2], now, tag)
      end
    end
    out[#out + 1] = KEYS[i]
    out[#out + 1] = item
  end
  if #out >= want * 2 then break end
end
return out
"""


def doorbell_key(queue: str) -> str:
    return DOORBELL_KEY.format(queue=queue)


def _ring(queue: str) -> list[tuple[Any, ...]]:
    """The commands that ring a queue's doorbell (bounded)."""
    bell = doorbell_key(queue)
    return [("lpush", bell, 1), ("ltrim", bell, 0, DOORBELL_MAX - 1)]


class QoS(kombu_redis.QoS):
    """Unacked bookkeeping done by the fetch script: recording happens there, and acks are sent
    with the next fetch (or when the channel closes). An ack that never reaches Redis because the
    worker died means the task runs again after the visibility timeout: at least once, as with
    any ack lost in a crash."""

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self.channel._pending_acks.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self) -> None:
        """Send the acks that are waiting for a fetch, now."""
        tags, self.channel._pending_acks = self.channel._pending_acks, []
        if tags:
            with self.channel.conn_or_acquire() as client, client.pipeline() as pipe:
                pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()

    def restore_unacked(self, client: Any = None) -> None:
        self.flush_acks()  # an acked message must not be given back when the channel closes
        super().restore_unacked(client)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel with the priority scale turned round and atomic, batched delivery.

    Priority: kombu's Redis transport pops priority 0 first, RabbitMQ delivers the highest number
    first. Users get one scale (9 is most urgent) everywhere, so the number a message carries
    stays the user's number (retries and republishing keep it) and only the Redis list it is
    pushed to is reversed.
    """

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("brokerstack's Redis transport does not support global_keyprefix")
        #: Queues consumed without acks (Celery's reply queues): not recorded as unacked.
        self._untracked_queues: set[str] = set()
        #: What the command in flight on the consumer connection is: ("fetch", n) or ("wait", 0).
        self._pending: tuple[str, int] | None = None
        #: Fetch (rather than wait for a doorbell) next: at start, after a ring or a timeout, and
        #: after a full batch (there may be more).
        self._fetch_next = True
        #: Delivery tags acked locally, sent to Redis with the next fetch (see QoS.ack).
        self._pending_acks: list[str] = []

    # --- priority -------------------------------------------------------------------------------

    def _get_message_priority(self, message: dict, reverse: bool = False) -> int:
        return super()._get_message_priority(message, reverse=not reverse)

    # --- publishing: every message rings its queue's doorbell ----------------------------------

    def _put(self, queue: str, message: dict, **kwargs: Any) -> None:
        # kombu's _put, plus the ring, in the same round trip (or the same publish batch).
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        commands: list[tuple[Any, ...]] = [("lpush", key, dumps(message))]
        if self._expires and queue in self._expires:
            commands += [("pexpire", self._q_for_pri(queue, p), self._expires[queue]) for p in self.priority_steps]
        commands += _ring(queue)
        publish_batch = kwargs.pop("_publish_batch", None)
        if publish_batch is not None:
            for name, *args in commands:
                publish_batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            for name, *args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()

    def _do_restore_message(self, payload: dict, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            for name, *args in _ring(queue):
                getattr(pipe, name)(*args)

    # --- consuming ----------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        if no_ack:
            self._untracked_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def _basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        self._untracked_queues.discard(queue)
        return super()._basic_cancel(consumer_tag)

    def _fetch_command(self, queues: list[str], want: int) -> list[Any]:
        lists = [(self._q_for_pri(queue, pri), queue) for pri in self.priority_steps for queue in queues]
        tracked = ["0" if queue in self._untracked_queues else "1" for _, queue in lists]
        acks, self._pending_acks = self._pending_acks, []
        return ["EVAL", FETCH_SCRIPT, 2 + len(lists), self.unacked_key, self.unacked_index_key,
                *(key for key, _ in lists), want, time.time(), len(acks), *acks, *tracked]

    def _want(self) -> int:
        estimate = self.qos.can_consume_max_estimate()
        return max(1, min(estimate or MAX_FETCH, MAX_FETCH))

    def _brpop_start(self, timeout: float | None = None) -> None:
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if self._fetch_next or self._pending_acks:  # acks travel with a fetch, never with a wait
            want = self._want()
            self._pending = ("fetch", want)
            command = self._fetch_command(queues, want)
        else:
            self._pending = ("wait", 0)
            command = ["BRPOP", *(doorbell_key(queue) for queue in queues), timeout or self.brpop_timeout]
        self.client.connection.send_command(*command)

    def _brpop_read(self, **options: Any) -> bool:
        kind, want = self._pending or ("wait", 0)
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVAL" if kind == "fetch" else "BRPOP", **options
                )
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if kind == "wait":
                # A ring, or a quiet second: either way, look at the queues now.
                self._fetch_next = True
                raise kombu_redis.Empty()
            items = reply or []
            delivered = len(items) // 2
            self._fetch_next = delivered >= want
            if not delivered:
                raise kombu_redis.Empty()
            for index in range(0, len(items), 2):
                queue = bytes_to_str(items[index]).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(queue)
                self.connection._deliver(loads(bytes_to_str(items[index + 1])), queue)
            return True
        finally:
            self._in_poll = None
            self._pending = None
            self._flush_brpop_reauth()

    def _get(self, queue: str) -> dict:
        """Synchronous get (basic_get): the same atomic take-and-record, one message."""
        with self.conn_or_acquire() as client:
            command = self._fetch_command([queue], 1)
            items = client.execute_command(*command)
        if not items:
            raise kombu_redis.Empty()
        return loads(bytes_to_str(items[1]))

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        if message is not None and no_ack:
            self.qos._remove_from_indices(message.delivery_tag).execute()
        return message


class Transport(kombu_redis.Transport):
    Channel = Channel


class RedisProfile(BrokerProfile):
    name = "redis"

    @property
    def url(self) -> str:
        return self.settings.redis_url

    def transport_options(self) -> dict[str, Any]:
        return {
            "visibility_timeout": self.settings.redis_visibility_timeout,
            "unacked_restore_interval": self.settings.redis_unacked_restore_interval,
            "unacked_restore_throttle": self.settings.redis_unacked_restore_throttle,
            "priority_steps": PRIORITY_STEPS,
            "socket_connect_timeout": self.settings.broker_connection_timeout,
            # Bounds a publish to a Redis that stopped answering; consumers block in BRPOP for
            # 1 s at a time, well inside it.
            "socket_timeout": max(5.0, self.settings.broker_connection_timeout),
            "socket_keepalive": True,
            "health_check_interval": 10,
        }

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        # Redis lists have no server-side arguments; priority comes from PRIORITY_STEPS.
        return {}

    def celery_options(self) -> dict[str, Any]:
        return {
            "broker_transport": TRANSPORT_PATH,
            # Redis keeps an unacked message in its "unacked" hash across reconnects, so a task
            # that was running when the connection dropped can still be acked when it finishes:
            # cancelling it would only make it run again after the visibility timeout.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        }
