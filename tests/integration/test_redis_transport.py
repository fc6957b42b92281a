"""brokerstack's Redis transport (worker.brokers.redis) at the kombu level: a delivered message is
always either in its queue or in the unacked hash, acks reach Redis when they are made, batches
follow priority, idle consumers wake on the doorbell. Where the same test body makes sense for
kombu's own transport it runs on both (``transport`` fixture), so a claim is measured against it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from lab.harness.nodes import BrokerNode, RedisOptions, make_node
from tests.helpers import wait_for
from worker.brokers.redis import TRANSPORT_PATH, doorbell_key
from worker.brokers.redis.transport import FETCH_SHA, MAX_FETCH_BYTES, UNDECODABLE_CONTENT_TYPE

pytestmark = pytest.mark.integration

QUEUE = Queue("transport-test", Exchange("transport-test", type="direct"), routing_key="transport-test")
STEPS = list(range(10))
#: kombu's stock transport, chosen the way Celery chooses it for a redis:// URL.
KOMBU = "redis"
TRANSPORTS = {"brokerstack": TRANSPORT_PATH, "kombu": KOMBU}


@pytest.fixture(scope="module")
def redis_node(driver) -> Iterator[BrokerNode]:
    with make_node("redis", driver) as node:
        yield node


@pytest.fixture
def client(redis_node: BrokerNode) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_node.url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(params=sorted(TRANSPORTS))
def transport(request: pytest.FixtureRequest) -> str:
    return TRANSPORTS[request.param]


def connection(node: BrokerNode, transport: str = TRANSPORT_PATH, **options: Any) -> Connection:
    return Connection(node.url, transport=transport, transport_options={"priority_steps": STEPS, **options})


def publish(
    node: BrokerNode,
    bodies: list[Any],
    priority: int | None = None,
    transport: str = TRANSPORT_PATH,
    headers: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    with connection(node, transport, **options) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(
                body,
                exchange=QUEUE.exchange,
                routing_key=QUEUE.routing_key,
                declare=[QUEUE],
                serializer="json",
                priority=priority,
                headers=headers,
            )


def queued(client: redis.Redis, prefix: str = "") -> int:
    return sum(client.llen(key) for key in client.keys(f"{prefix}transport-test*"))


def unacked(client: redis.Redis, prefix: str = "") -> int:
    return client.hlen(f"{prefix}unacked")


def consume(conn: Connection, prefetch: int, **consumer_options: Any) -> tuple[Consumer, list[tuple[Any, Any]]]:
    received: list[tuple[Any, Any]] = []
    channel = conn.channel()
    channel.basic_qos(0, prefetch, False)
    consumer = Consumer(
        channel,
        [QUEUE],
        callbacks=[lambda body, message: received.append((body, message))],
        accept=["json"],
        **consumer_options,
    )
    return consumer, received


def acking(received: list[Any]) -> Callable[[Any, Any], None]:
    """A consumer callback that keeps the body and acks the message."""

    def callback(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    return callback


def test_a_fetched_batch_is_recorded_as_unacked_and_given_back_unacked(redis_node, client):
    publish(redis_node, [f"m{i}" for i in range(10)])
    with connection(redis_node) as conn:
        consumer, received = consume(conn, 4)
        with consumer:
            conn.drain_events(timeout=5)
            # One fetch took the prefetch window: four messages, all recorded before delivery.
            assert len(received) == 4
            assert unacked(client) == 4 and client.zcard("unacked_index") == 4
            assert queued(client) == 6
            received[0][1].ack()
        # The consumer goes away: the three it never acked are given back, none is lost.
    wait_for(lambda: queued(client) == 9 and unacked(client) == 0, 10, "the unacked messages to return")


def test_an_ack_is_in_redis_when_ack_returns(redis_node, client, transport):
    """Regression (issue 9, 1): acks used to wait for the consumer's next fetch, which never comes
    at warm shutdown, after a cancel, or while a prefork worker idles in the doorbell wait. Early
    acks (acks_late off) went the same way."""
    publish(redis_node, ["a", "b"], transport=transport)
    with connection(redis_node, transport) as conn:
        consumer, received = consume(conn, 1)
        with consumer:
            conn.drain_events(timeout=5)
            assert unacked(client) == 1
            received[0][1].ack()
            assert unacked(client) == 0, "the ack did not reach Redis when ack() returned"


def test_an_ack_made_while_redis_is_down_is_sent_once_it_is_back(driver, tmp_path):
    """Regression (issue 9, 1): acks made while Redis was unreachable were discarded, so the task
    ran again after the visibility timeout. kombu's transport raises and loses them too; ours keeps
    them and sends them with the next fetch."""
    with make_node("redis", driver, redis=RedisOptions(appendonly=True, appendfsync="always")) as node:
        client = redis.Redis.from_url(node.url)
        publish(node, ["a"])
        conn = connection(node)
        consumer, received = consume(conn, 1)
        with consumer:
            conn.drain_events(timeout=5)
            assert unacked(client) == 1
            node.stop()
            received[0][1].ack()  # kept, not raised: Redis is down
        conn.release()
        node.start()
        node.wait_ready()
        assert unacked(client) == 1
        with connection(node) as conn:
            consumer, _ = consume(conn, 1)
            with consumer, pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)  # the first fetch carries the kept ack
        assert unacked(client) == 0
        client.close()


def test_a_payload_redis_json_rejects_is_still_recorded_and_comes_back(redis_node, client, transport):
    """Regression (issue 9, 2): Redis' Lua JSON decoder rejects a lone surrogate escape, which
    Python's json writes (e.g. in argsrepr of a surrogate-escaped file name); such a message was
    delivered but never recorded as unacked, so a crash or shutdown lost it."""
    publish(redis_node, ["x"], headers={"argsrepr": "('\udc80.txt',)"}, transport=transport)
    with connection(redis_node, transport) as conn:
        consumer, received = consume(conn, 1)
        with consumer:
            conn.drain_events(timeout=5)
            assert received and received[0][1].headers["argsrepr"] == "('\udc80.txt',)"
            assert unacked(client) == 1, "the delivered message is neither queued nor unacked"
    wait_for(lambda: queued(client) == 1 and unacked(client) == 0, 10, "the unacked message to return")


def test_an_undecodable_item_is_handed_on_and_does_not_strand_its_batch(redis_node, client):
    """Regression (issue 9, 3): one item that is not a kombu message made the whole batch fail
    after it was recorded, stranding the good ones in unacked until the visibility timeout."""
    publish(redis_node, ["first"])
    client.lpush("transport-test", b"\xffnot json")
    publish(redis_node, ["second", "third"])
    decode_errors: list[Any] = []

    def on_decode_error(message: Any, exc: Exception) -> None:
        decode_errors.append((message, exc))
        message.reject()

    with connection(redis_node) as conn:
        consumer, received = consume(conn, 10, on_decode_error=on_decode_error)
        with consumer:
            conn.drain_events(timeout=5)
            assert [body for body, _ in received] == ["first", "second", "third"]
            for _, message in received:
                message.ack()
    assert len(decode_errors) == 1
    message, _ = decode_errors[0]
    assert message.content_type == UNDECODABLE_CONTENT_TYPE and message.body == b"\xffnot json"
    assert unacked(client) == 0 and queued(client) == 0


def test_priority_order_holds_inside_a_batch(redis_node, client):
    publish(redis_node, ["low"] * 3, priority=0)
    publish(redis_node, ["high"] * 2, priority=9)
    received: list[str] = []
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 5, False)
        with Consumer(channel, [QUEUE], callbacks=[acking(received)]):
            conn.drain_events(timeout=5)
    assert received == ["high", "high", "low", "low", "low"]


def drain_bodies(node: BrokerNode, transport: str, count: int, **options: Any) -> list[str]:
    received: list[str] = []
    with connection(node, transport, **options) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [QUEUE], callbacks=[acking(received)]):
            while len(received) < count:
                conn.drain_events(timeout=5)
    return received


def test_what_a_stock_celery_client_gets_on_the_same_redis(redis_node, client):
    """Issue 9, 6, as docs/configuration.md states it: by default a stock client's numbers keep
    kombu's meaning (0 and no priority most urgent, 9 least) on brokerstack's consumers, while
    brokerstack's own 9 is most urgent; REDIS_PRIORITY_ORDER=kombu puts everyone on kombu's scale."""
    publish(redis_node, ["stock-9"], priority=9, transport=KOMBU)
    publish(redis_node, ["stock-none"], transport=KOMBU)
    publish(redis_node, ["ours-9"], priority=9)
    publish(redis_node, ["ours-0"], priority=0)
    assert drain_bodies(redis_node, TRANSPORT_PATH, 4) == ["stock-none", "ours-9", "stock-9", "ours-0"]

    kombu_order: dict[str, Any] = {"brokerstack_priority_order": "kombu"}
    publish(redis_node, ["stock-9"], priority=9, transport=KOMBU)
    publish(redis_node, ["ours-9"], priority=9, **kombu_order)
    publish(redis_node, ["stock-0"], priority=0, transport=KOMBU)
    publish(redis_node, ["ours-0"], priority=0, **kombu_order)
    assert drain_bodies(redis_node, TRANSPORT_PATH, 4, **kombu_order) == ["stock-0", "ours-0", "stock-9", "ours-9"]
    # ... and a stock worker sees the same order as ours.
    publish(redis_node, ["ours-9"], priority=9, **kombu_order)
    publish(redis_node, ["ours-0"], priority=0, **kombu_order)
    assert drain_bodies(redis_node, KOMBU, 2) == ["ours-0", "ours-9"]


def test_global_keyprefix_prefixes_every_key_and_restores(redis_node, client):
    """Regression (issue 9, 5): global_keyprefix raised ValueError."""
    prefix: dict[str, Any] = {"global_keyprefix": "tenant-a:"}
    publish(redis_node, ["a", "b", "c"], **prefix)
    with connection(redis_node, **prefix) as conn:
        consumer, received = consume(conn, 2)
        with consumer:
            conn.drain_events(timeout=5)
            assert len(received) == 2 and unacked(client, "tenant-a:") == 2
            received[0][1].ack()
            assert unacked(client, "tenant-a:") == 1
    wait_for(
        lambda: queued(client, "tenant-a:") == 2 and unacked(client, "tenant-a:") == 0,
        10,
        "the unacked message to return under the prefix",
    )
    unprefixed = [key for key in client.keys("*") if not key.startswith(b"tenant-a:")]
    assert unprefixed == []
    assert sorted(drain_bodies(redis_node, TRANSPORT_PATH, 2, **prefix)) == ["b", "c"]
    assert unacked(client, "tenant-a:") == 0 and queued(client, "tenant-a:") == 0


def test_the_script_is_loaded_once_and_survives_a_script_flush(redis_node, client):
    """Regression (issue 9, 7): the whole script was sent with EVAL on every fetch."""
    client.config_resetstat()
    publish(redis_node, ["a"])
    assert drain_bodies(redis_node, TRANSPORT_PATH, 1) == ["a"]
    client.script_flush()
    publish(redis_node, ["b", "c"])
    assert drain_bodies(redis_node, TRANSPORT_PATH, 2) == ["b", "c"]
    stats = client.info("commandstats")
    assert stats.get("cmdstat_evalsha", {}).get("calls", 0) >= 2
    assert stats.get("cmdstat_eval", {}).get("calls", 0) == 0
    assert client.script_exists(FETCH_SHA) == [True]


def test_a_fetch_of_large_messages_stops_at_the_byte_budget(redis_node, client):
    """Regression (issue 9, 7): a fetch took the whole prefetch window whatever its size, and
    JSON-decoded every message inside Redis (one fetch of 100 x 256 KB blocked Redis for 340 ms).
    Now nothing is decoded (see the lone-surrogate test) and a fetch stops at MAX_FETCH_BYTES, so a
    script call stays a few milliseconds long (``brokerstack bench`` measures it)."""
    big = "x" * (256 * 1024)
    publish(redis_node, [big] * 20)
    batches = []
    with connection(redis_node) as conn:
        consumer, received = consume(conn, 20)
        with consumer:
            while len(received) < 20:
                before = len(received)
                conn.drain_events(timeout=5)
                batches.append(len(received) - before)
            for _, message in received:
                message.ack()
    assert sum(batches) == 20 and unacked(client) == 0
    assert max(batches) <= MAX_FETCH_BYTES // len(big), batches


def test_an_idle_consumer_wakes_on_the_doorbell(redis_node, client):
    received: list[Any] = []
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [QUEUE], callbacks=[acking(received)]):
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.3)  # idle: waiting on the doorbell
            sent = time.monotonic()
            publish(redis_node, ["ding"])
            conn.drain_events(timeout=5)
            woke = time.monotonic()
    assert received == ["ding"] and woke - sent < 0.5
    assert client.llen(doorbell_key("transport-test")) <= 1


def test_no_ack_consumers_are_not_tracked(redis_node, client):
    publish(redis_node, ["fire", "forget"])
    received: list[str] = []
    with (
        connection(redis_node) as conn,
        Consumer(conn.channel(), [QUEUE], no_ack=True, callbacks=[lambda body, message: received.append(body)]),
    ):
        conn.drain_events(timeout=5)
    assert received and unacked(client) == 0


def test_an_empty_fetch_over_many_queues_looks_before_it_pops(redis_node, client):
    """Regression (issue 9, 7): an idle consumer's fetch ran an RPOP on every priority list of every
    queue (2.1 ms per fetch with 200 queues); one EXISTS per chunk of lists now answers "nothing"."""
    queues = [Queue(f"many-{i}", Exchange(f"many-{i}", type="direct"), routing_key=f"many-{i}") for i in range(200)]
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, queues, callbacks=[acking([])]):
            client.config_resetstat()
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)
    stats = client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] >= 1
    assert stats.get("cmdstat_rpop", {}).get("calls", 0) == 0
    assert stats["cmdstat_exists"]["calls"] >= 1


def test_acks_and_publishes_reuse_one_client_per_pool(redis_node, client, transport, monkeypatch):
    """kombu's channel builds a new redis-py client for every synchronous command (each ack, each
    event published), and a redis-py 8 client builds ~170 response callbacks when it is created:
    ~14% of a solo worker's CPU per no-op task with brokerstack's defaults (cProfile, 3,000 tasks).
    brokerstack's channel builds one per pool; kombu's is run beside it to show the difference."""
    publish(redis_node, [f"m{i}" for i in range(20)], transport=transport)
    created: list[int] = []
    original = redis.Redis.__init__

    def counting_init(self: redis.Redis, *args: Any, **kwargs: Any) -> None:
        created.append(1)
        original(self, *args, **kwargs)

    with connection(redis_node, transport) as conn:
        received: list[Any] = []
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [QUEUE], callbacks=[acking(received)], accept=["json"]):
            wait_for(lambda: conn.drain_events(timeout=1) or len(received) >= 1, 10, "the first message")
            monkeypatch.setattr(redis.Redis, "__init__", counting_init)
            producer = Producer(channel)
            for index in range(19):
                conn.drain_events(timeout=5)
                producer.publish(f"again-{index}", exchange=QUEUE.exchange, routing_key="elsewhere", serializer="json")
    assert len(received) == 20 and unacked(client) == 0
    if transport == TRANSPORT_PATH:
        assert len(created) == 0, f"{len(created)} clients built for 19 acks and 19 publishes"
    else:
        assert len(created) >= 19, "kombu's transport is expected to build a client per command"
