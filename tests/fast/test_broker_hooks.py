"""What used to be broker-name branches outside worker/brokers/ now comes from the profiles: which
client errors mean "the broker is not there" (worker.errors) and which URL Flower's Broker page
reads queues through (deploy/container/flower.py). A broker registered in PROFILES brings both."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import amqp.exceptions
import kombu.exceptions
import pytest
import redis.exceptions
from celery import Celery

from tests.fast.test_settings_registry import SqsProfile, SqsSettings
from worker.brokers import PROFILES
from worker.brokers.redis.errors import NoReplicasError
from worker.errors import BROKER_ERRORS, broker_errors
from worker.settings import Settings

# mypy checks deploy/container/ as the package "container" (deploy/ has no __init__.py, as in the
# image): imported by name, the module is not checked twice under two names.
broker_page_url = import_module("deploy.container.flower").broker_page_url


class SqsUnreachable(Exception):
    """What a stand-in broker's client raises when its broker does not answer."""


class SqsWithErrors(SqsProfile):
    client_errors = (SqsUnreachable,)


def test_every_profile_declares_its_client_errors_and_they_mean_unavailable() -> None:
    for profile in PROFILES.values():
        assert profile.client_errors, f"{profile.name} declares no client errors"
        assert all(issubclass(error, BaseException) for error in profile.client_errors)
        assert set(profile.client_errors) <= set(BROKER_ERRORS)


def test_the_errors_that_meant_unavailable_before_the_registry_still_do() -> None:
    """The list worker/errors.py held by hand, now gathered from the profiles: none is lost."""
    before = (
        kombu.exceptions.OperationalError,
        kombu.exceptions.ConnectionError,
        amqp.exceptions.RecoverableConnectionError,
        amqp.exceptions.ConnectionError,
        amqp.exceptions.ChannelError,
        amqp.exceptions.MessageNacked,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ReadOnlyError,
        redis.exceptions.MasterDownError,
        NoReplicasError,
        ConnectionError,
        TimeoutError,
        OSError,
    )
    assert set(before) <= set(BROKER_ERRORS)
    assert len(BROKER_ERRORS) == len(set(BROKER_ERRORS))
    # A bug stays a bug: neither a plain error nor a Redis answer that is not about the node.
    assert not issubclass(ValueError, BROKER_ERRORS)
    assert not issubclass(redis.exceptions.ResponseError, BROKER_ERRORS)


def test_a_registered_profile_brings_its_client_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SqsUnreachable not in broker_errors()
    monkeypatch.setitem(PROFILES, SqsWithErrors.name, SqsWithErrors)
    assert SqsUnreachable in broker_errors()
    assert set(BROKER_ERRORS) <= set(broker_errors())


def _capp(settings: Settings) -> Any:
    app = Celery("flower-page", set_as_current=False)
    app.brokerstack_settings = settings
    return app


def test_flower_reads_redis_queues_through_the_first_redis_url() -> None:
    """brokerstack's Redis transport is picked by class path, which Flower cannot read queues
    through: it gets the Redis URL (the first sentinel of a list: Flower parses one URL)."""
    plain = Settings(broker_profile="redis", redis_url="redis://:pw@cache.local:6390/2")
    assert broker_page_url(_capp(plain)) == "redis://:pw@cache.local:6390/2"
    sentinels = Settings(
        broker_profile="redis",
        redis_url="sentinel://s1.local:26379;sentinel://s2.local:26379",
        redis_sentinel_master="m",
    )
    assert broker_page_url(_capp(sentinels)) == "sentinel://s1.local:26379"


def test_flower_keeps_its_own_broker_uri_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ's connection URI is amqp:// already (Flower reads its queues through the
    management API); a profile that says nothing leaves Flower's own URI too."""
    assert broker_page_url(_capp(Settings(broker_profile="rabbitmq"))) is None
    monkeypatch.setitem(PROFILES, SqsProfile.name, SqsProfile)
    assert broker_page_url(_capp(SqsSettings(broker_profile="sqs"))) is None
    assert broker_page_url(Celery("no-settings", set_as_current=False)) is None


def test_every_vendor_names_the_memory_figure_the_report_sizes_it_by() -> None:
    """The vendor holds what lab/report/sizing.py's HEADLINE table keeps per broker (that table
    can become ``{name: v.memory_headline for name, v in VENDORS.items()}`` unchanged)."""
    from lab.harness.vendors import VENDORS
    from lab.report.sizing import HEADLINE, METRICS

    assert {name: vendor.memory_headline for name, vendor in VENDORS.items()} == HEADLINE
    assert all(vendor.memory_headline in METRICS for vendor in VENDORS.values())
