"""Queues, routes and the priority scale: the same names and meaning on every broker."""

from __future__ import annotations

import pytest

from tests.fast.conftest import fast_settings, memory_celery
from worker.brokers import profile_for
from worker.config import build_celery_config
from worker.tasks import EXPOSED_TASKS
from worker.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_QUEUE,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TASK_ROUTES,
    WORK_QUEUES,
    check_priority,
    dead_letter_routing_key,
    work_queues,
)


def test_the_three_work_queues_most_urgent_first() -> None:
    assert WORK_QUEUES == ("high_priority", "default", "low_priority")
    assert DEFAULT_QUEUE in WORK_QUEUES
    assert (PRIORITY_MIN, PRIORITY_MAX) == (0, 9)


def test_every_route_names_a_work_queue_and_a_registered_task() -> None:
    registered = memory_celery(fast_settings()).tasks
    for task, route in TASK_ROUTES.items():
        assert route["queue"] in WORK_QUEUES, task
        assert task in registered, f"route for a task that does not exist: {task}"
    for short, name in EXPOSED_TASKS.items():
        assert name in registered, f"exposed task {short} -> {name} is not registered"


@pytest.mark.parametrize("profile", ["redis", "rabbitmq"])
def test_work_queues_are_durable_direct_and_named_alike(profile: str) -> None:
    queues = work_queues(profile_for(fast_settings(profile)))
    assert [q.name for q in queues] == list(WORK_QUEUES)
    for queue in queues:
        assert queue.durable and queue.exchange.name == queue.name == queue.routing_key
        assert queue.exchange.type == "direct"


def test_redis_queues_have_no_server_side_arguments() -> None:
    assert all(q.as_dict()["queue_arguments"] == {} for q in work_queues(profile_for(fast_settings("redis"))))


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_rabbitmq_queues_dead_letter_into_the_dlx(queue_type: str) -> None:
    profile = profile_for(fast_settings("rabbitmq", rabbitmq_queue_type=queue_type))
    for queue in work_queues(profile):
        arguments = queue.as_dict()["queue_arguments"]
        assert arguments["x-queue-type"] == queue_type
        assert arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
        assert arguments["x-dead-letter-routing-key"] == dead_letter_routing_key(queue.name)
        if queue_type == "classic":
            assert arguments["x-max-priority"] == PRIORITY_MAX
    [dlq] = profile.dead_letter_queues()
    assert dlq.name == DEAD_LETTER_QUEUE
    assert {b.routing_key for b in dlq.bindings} == {dead_letter_routing_key(q) for q in WORK_QUEUES}


@pytest.mark.parametrize("profile", ["redis", "rabbitmq"])
def test_celery_config_uses_the_topology(profile: str) -> None:
    conf = build_celery_config(fast_settings(profile))
    assert [q.name for q in conf["task_queues"]] == list(WORK_QUEUES)
    assert conf["task_default_queue"] == DEFAULT_QUEUE
    assert conf["task_routes"] == TASK_ROUTES
    assert conf["task_create_missing_queues"] is False
    assert conf["accept_content"] == ["json"]


@pytest.mark.parametrize("priority", [PRIORITY_MIN, 5, PRIORITY_MAX])
def test_priorities_in_range_pass(priority: int) -> None:
    assert check_priority(priority) == priority


@pytest.mark.parametrize("priority", [PRIORITY_MIN - 1, PRIORITY_MAX + 1])
def test_priorities_out_of_range_fail(priority: int) -> None:
    with pytest.raises(ValueError, match="9 is most urgent"):
        check_priority(priority)
