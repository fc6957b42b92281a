"""The real-broker test layer: broker nodes as fixtures, so the same test body runs on both
profiles, plus real ``celery worker`` processes and the API against them.

Brokers come from lab.harness.nodes: containers when a Docker engine answers, local broker processes on
free ports otherwise (BROKERSTACK_TEST_DRIVER=auto|docker|process).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # no Ryuk image without a registry
# Records that tests write (priority, chaos, bench) go to a scratch directory: the committed
# results/ hold the runs the docs were generated from, made on purpose with the CLI.
# The scratch directory goes when the test run ends (it is only ever made here, never reused).
if "BROKERSTACK_RESULTS_DIR" not in os.environ:
    _SCRATCH_RESULTS = tempfile.mkdtemp(prefix="brokerstack-test-results-")
    os.environ["BROKERSTACK_RESULTS_DIR"] = _SCRATCH_RESULTS
    atexit.register(shutil.rmtree, _SCRATCH_RESULTS, ignore_errors=True)

import pytest
from fastapi.testclient import TestClient

from lab.harness.nodes import BrokerNode, DriverName, make_node, resolve_driver
from lab.harness.nodes.base import random_suffix
from lab.harness.processes import CeleryWorker
from lab.harness.settings import settings_for
from services.api.app import create_app
from worker.brokers import PROFILES
from worker.celery_app import create_celery
from worker.settings import Settings

#: Every broker in the product's registry: a broker added there runs every broker-backed test.
BROKER_KINDS = tuple(PROFILES)


@pytest.fixture(scope="session")
def driver() -> DriverName:
    return resolve_driver()


@pytest.fixture(scope="session")
def results_node(driver: DriverName) -> Iterator[BrokerNode]:
    """A Redis for results and the outbox, apart from the broker under test on both profiles."""
    with make_node("redis", driver, name=f"results-{random_suffix()}") as node:
        yield node


@pytest.fixture(scope="session", params=BROKER_KINDS)
def broker(request: pytest.FixtureRequest, driver: DriverName) -> Iterator[BrokerNode]:
    """A broker shared by the tests of a session; tests that stop or kill it use ``own_broker``."""
    with make_node(request.param, driver) as node:
        yield node


@pytest.fixture(params=BROKER_KINDS)
def own_broker(request: pytest.FixtureRequest, driver: DriverName) -> Iterator[BrokerNode]:
    """A broker for one test alone, which it may stop, kill and restart."""
    with make_node(request.param, driver) as node:
        yield node


def _purged_settings(broker: BrokerNode, results: BrokerNode, **overrides: Any) -> Settings:
    settings = settings_for(broker, results, **overrides)
    app = create_celery(settings)
    try:
        app.control.purge()  # nothing left over from an earlier test on a shared broker
        _purge_delayed(app, broker)
    finally:
        app.close()
    return settings


def _purge_delayed(app: Any, broker: BrokerNode) -> None:
    """RabbitMQ's delayed-delivery ladder is shared by every queue, so Celery's purge cannot empty
    it: an earlier test's countdown task would land in a later test's queue when due (Redis' purge
    clears its delayed sets itself)."""
    if broker.kind != "rabbitmq":
        return
    import amqp.exceptions

    from worker.brokers.rabbitmq.delayed import LADDER_QUEUES

    with app.connection_for_write() as connection:
        for name in LADDER_QUEUES:
            channel = connection.channel()  # a missing queue closes the channel it was asked on
            try:
                channel.queue_purge(name)
            except amqp.exceptions.NotFound:
                pass
            finally:
                connection.maybe_close_channel(channel)


@pytest.fixture
def settings(broker: BrokerNode, results_node: BrokerNode) -> Settings:
    return _purged_settings(broker, results_node)


@pytest.fixture
def own_settings(own_broker: BrokerNode, results_node: BrokerNode) -> Settings:
    return _purged_settings(own_broker, results_node)


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., CeleryWorker]]:
    """``start_worker(settings, queues=..., pool=..., concurrency=...)``: a running worker process,
    stopped after the test."""
    workers: list[CeleryWorker] = []

    def start(settings: Settings, **options: Any) -> CeleryWorker:
        worker = CeleryWorker(settings.to_env(), log_dir=tmp_path, **options)
        workers.append(worker)
        worker.start()
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.close()


@pytest.fixture
def make_api() -> Iterator[Callable[[Settings], TestClient]]:
    clients: list[TestClient] = []

    def make(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
