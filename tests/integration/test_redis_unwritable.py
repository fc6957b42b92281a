"""A Redis primary that is up but takes no writes (NOREPLICAS under ``min-replicas-to-write``,
READONLY after a failover demoted it) is a lost connection, not a crash: the worker reconnects and
consumes once writes are taken again, and the API answers 503 meanwhile. Regression: the worker
exited with "Unrecoverable error: NOREPLICAS" (issue 13's redis-sentinel-wait partition runs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from lab.harness.nodes import BrokerNode
from lab.harness.processes import CeleryWorker
from lab.harness.settings import settings_for
from worker.brokers.redis.errors import NoReplicasError
from worker.celery_app import create_celery
from worker.settings import Settings

pytestmark = pytest.mark.integration

#: Long enough for an idle consumer to fetch (and be refused) several times.
REFUSED_FOR = 3.0


@pytest.fixture
def redis_client(own_broker: BrokerNode) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_broker.url)
    yield client
    client.close()


def refuse_writes(client: redis.Redis, refuse: bool) -> None:
    """With no replica at all, ``min-replicas-to-write 1`` makes the primary refuse every write."""
    client.config_set("min-replicas-to-write", 1 if refuse else 0)


@pytest.mark.parametrize("own_broker", ["redis"], indirect=True)
def test_the_refusal_has_its_own_exception(redis_client: redis.Redis) -> None:
    refuse_writes(redis_client, True)
    try:
        with pytest.raises(NoReplicasError):
            redis_client.lpush("brokerstack-test", "x")
    finally:
        refuse_writes(redis_client, False)


@pytest.mark.parametrize("own_broker", ["redis"], indirect=True)
def test_a_worker_waits_out_a_primary_that_refuses_writes(
    own_broker: BrokerNode,
    results_node: BrokerNode,
    redis_client: redis.Redis,
    start_worker: Callable[..., CeleryWorker],
    make_api: Callable[[Settings], TestClient],
) -> None:
    settings = settings_for(own_broker, results_node)
    worker = start_worker(settings, queues=["default"])
    api = make_api(settings)
    refuse_writes(redis_client, True)
    try:
        refused_until = time.monotonic() + REFUSED_FOR
        response = api.post("/tasks/add", json={"args": [1, 1]})
        assert response.status_code == 503, response.text
        while time.monotonic() < refused_until:  # the worker keeps fetching and being refused
            assert worker.is_running(), worker.logs()[-2000:]
            time.sleep(0.2)
    finally:
        refuse_writes(redis_client, False)
    assert worker.is_running(), worker.logs()[-2000:]
    app = create_celery(settings)
    try:
        assert app.tasks["worker.tasks.basic.add"].delay(2, 3).get(timeout=60) == 5
    finally:
        app.close()
