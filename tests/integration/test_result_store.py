"""The result backend stores a state in one round trip (worker/store_result.lua) and keeps every
promise of Celery's own store: a SUCCESS is never overwritten, FAILURE keeps its own expiry, and
the state is published for ``AsyncResult.get()``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from celery import Celery, states
from celery.backends.redis import RedisBackend

from lab.harness.nodes import BrokerNode
from lab.harness.processes import CeleryWorker
from lab.harness.settings import settings_for
from worker.backends import BrokerstackRedisBackend
from worker.celery_app import create_celery
from worker.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def app(results_node: BrokerNode) -> Iterator[Celery]:
    app = create_celery(settings_for(results_node, result_expires=600), producer_only=True)
    app.conf.result_failure_expires = 60
    yield app
    app.close()


def commands(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in client.info("commandstats").items()}
    finally:
        client.close()


def test_the_backend_is_brokerstack_s(app: Celery) -> None:
    assert isinstance(app.backend, BrokerstackRedisBackend)


def test_a_late_state_never_overwrites_success(app: Celery) -> None:
    backend, task_id = app.backend, str(uuid.uuid4())
    backend.mark_as_started(task_id)
    assert backend.get_task_meta(task_id)["status"] == states.STARTED
    backend.mark_as_done(task_id, 42)
    backend.mark_as_started(task_id)  # a redelivered duplicate starting after the first one succeeded
    backend.mark_as_failure(task_id, ValueError("late"))
    backend._cache.clear()
    meta = backend.get_task_meta(task_id)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, 42)


def test_expiry_is_celery_s(app: Celery, results_node: BrokerNode) -> None:
    backend, done, failed = app.backend, str(uuid.uuid4()), str(uuid.uuid4())
    backend.mark_as_done(done, 1)
    backend.mark_as_failure(failed, ValueError("boom"))
    client = redis.Redis.from_url(results_node.url)
    try:
        assert 590 < client.ttl(backend.get_key_for_task(done)) <= 600
        assert 50 < client.ttl(backend.get_key_for_task(failed)) <= 60
    finally:
        client.close()


def test_one_round_trip_per_state_where_celery_makes_two(app: Celery, results_node: BrokerNode) -> None:
    stock = RedisBackend(app=app, url=app.conf.result_backend)
    stores = 20

    def count(store: Callable[[str], object]) -> dict[str, int]:
        before = commands(results_node.url)
        for _ in range(stores):
            store(str(uuid.uuid4()))
        after = commands(results_node.url)
        return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}

    ours = count(lambda task_id: app.backend.mark_as_done(task_id, 1))
    celery = count(lambda task_id: stock.mark_as_done(task_id, 1))
    # Celery: GET (the SUCCESS check), then MULTI SETEX PUBLISH EXEC: two round trips per store.
    assert celery["get"] == celery["exec"] == stores
    # Ours: one EVALSHA per store (the GET, SETEX and PUBLISH inside it are counted as well).
    assert ours["evalsha"] <= stores and ours.get("evalsha", 0) + ours.get("eval", 0) == stores
    assert "exec" not in ours and "multi" not in ours
    assert ours["setex"] == ours["publish"] == stores


def test_async_result_get_still_wakes_on_the_published_state(
    settings: Settings, start_worker: Callable[..., CeleryWorker]
) -> None:
    """``.get()`` on a Redis backend waits on the key's channel: the script must publish."""
    start_worker(settings, queues=["default"])
    app = create_celery(settings)
    try:
        assert app.tasks["worker.tasks.basic.add"].delay(2, 3).get(timeout=30) == 5
    finally:
        app.close()
