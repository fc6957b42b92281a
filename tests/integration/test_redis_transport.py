"""brokerstack's Redis transport (worker.brokers.redis): a delivered message is always either in
its queue or in the unacked hash, batches follow priority, idle consumers wake on the doorbell."""

from __future__ import annotations

import time

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from lab.nodes import make_node
from tests.helpers import wait_for
from worker.brokers.redis import TRANSPORT_PATH, doorbell_key

pytestmark = pytest.mark.integration

QUEUE = Queue("transport-test", Exchange("transport-test", type="direct"), routing_key="transport-test")


@pytest.fixture(scope="module")
def redis_node(driver):
    with make_node("redis", driver) as node:
        yield node


@pytest.fixture
def client(redis_node):
    client = redis.Redis.from_url(redis_node.url)
    client.flushdb()
    yield client
    client.close()


def connection(node, **options):
    return Connection(node.url, transport=TRANSPORT_PATH, transport_options={"priority_steps": list(range(10)), **options})


def publish(node, bodies, priority=None):
    with connection(node) as conn:
        producer = Producer(conn.default_channel)
        for body in bodies:
            producer.publish(body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key, declare=[QUEUE],
                             serializer="json", priority=priority)


def queued(client) -> int:
    return sum(client.llen(key) for key in client.keys("transport-test*"))


def test_a_fetched_batch_is_recorded_as_unacked_and_comes_back_unacked(redis_node, client):
    publish(redis_node, [f"m{i}" for i in range(10)])
    received = []
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 4, False)
        with Consumer(channel, [QUEUE], callbacks=[lambda body, message: received.append((body, message))]):
            conn.drain_events(timeout=5)
            # One fetch took the prefetch window: four messages, all recorded before delivery.
            assert len(received) == 4
            assert client.hlen("unacked") == 4 and client.zcard("unacked_index") == 4
            assert queued(client) == 6
            # An ack travels with the next fetch: one round trip for both.
            received[0][1].ack()
            assert client.hlen("unacked") == 4
            conn.drain_events(timeout=5)
            assert len(received) == 5 and client.hlen("unacked") == 4 and queued(client) == 5
            received[1][1].ack()
        # The consumer goes away: its pending ack is sent, the three it never acked are given
        # back, none is lost.
    wait_for(lambda: queued(client) == 8 and client.hlen("unacked") == 0, 10, "the unacked messages to return")


def test_priority_order_holds_inside_a_batch(redis_node, client):
    publish(redis_node, ["low"] * 3, priority=0)
    publish(redis_node, ["high"] * 2, priority=9)
    received = []
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 5, False)
        with Consumer(channel, [QUEUE], callbacks=[lambda body, message: (received.append(body), message.ack())]):
            conn.drain_events(timeout=5)
    assert received == ["high", "high", "low", "low", "low"]


def test_an_idle_consumer_wakes_on_the_doorbell(redis_node, client):
    received = []
    with connection(redis_node) as conn:
        channel = conn.channel()
        channel.basic_qos(0, 1, False)
        with Consumer(channel, [QUEUE], callbacks=[lambda body, message: (received.append(time.monotonic()), message.ack())]):
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.3)  # idle: waiting on the doorbell
            sent = time.monotonic()
            publish(redis_node, ["ding"])
            conn.drain_events(timeout=5)
    assert received and received[0] - sent < 0.5
    assert client.llen(doorbell_key("transport-test")) <= 1


def test_no_ack_consumers_are_not_tracked(redis_node, client):
    publish(redis_node, ["fire", "forget"])
    received = []
    with connection(redis_node) as conn:
        with Consumer(conn.channel(), [QUEUE], no_ack=True, callbacks=[lambda body, message: received.append(body)]):
            conn.drain_events(timeout=5)
    assert received and client.hlen("unacked") == 0
