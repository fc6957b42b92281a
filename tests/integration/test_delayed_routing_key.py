"""A delayed task knows the queue it was sent to, like any other task (issue 14): on RabbitMQ the
delayed-delivery ladder spells the delay in front of the routing key, and a task that came through
it must not see that prefix (the dead-letter hooks record the routing key as the message's queue,
a replay publishes back to it, ``task_with_info`` shows it). Same body on both brokers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import enqueue, wait_for_task
from worker.brokers.rabbitmq.delayed import DELIVERY_EXCHANGE, strip_ladder_prefix

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("queue", ["default", "high_priority"])
def test_a_delayed_task_sees_the_routing_key_it_was_sent_with(settings, make_api, start_worker, queue):
    api = make_api(settings)
    start_worker(settings)
    task_id = enqueue(api, "task_with_info", args=["later"], queue=queue, countdown=2)
    status = wait_for_task(api, task_id, timeout=60)
    assert status["state"] == "SUCCESS", status
    assert status["result"]["queue"] == queue


class _Request:
    def __init__(self, delivery_info: dict[str, Any]) -> None:
        self.delivery_info = delivery_info


def test_only_a_key_that_came_through_the_ladder_loses_its_prefix():
    through = _Request({"exchange": DELIVERY_EXCHANGE, "routing_key": "0." * 27 + "1.default"})
    strip_ladder_prefix(request=through)
    assert through.delivery_info["routing_key"] == "default"
    # A key of the same shape that did not come through the ladder is the publisher's: left alone.
    direct = _Request({"exchange": "default", "routing_key": "0." * 28 + "default"})
    strip_ladder_prefix(request=direct)
    assert direct.delivery_info["routing_key"] == "0." * 28 + "default"
    strip_ladder_prefix(request=_Request({}))  # a message without delivery info (the memory transport)
