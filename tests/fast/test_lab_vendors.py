"""The lab's vendors (lab/harness/vendors/<broker>/) answer what used to be branches on the broker
name, with the same answers: settings, transports, redelivery bounds, records, what is measured."""

from __future__ import annotations

import pytest

from lab.experiments.chaos.record import record_transport
from lab.experiments.chaos.runner import RunOptions
from lab.harness.nodes import RabbitOptions, RedisOptions, make_node
from lab.harness.setups import DEFAULT_TRANSPORT, SETUPS
from lab.harness.vendors import VENDORS, vendor_for


def test_settings_point_each_broker_where_its_profile_reads() -> None:
    redis, rabbit = vendor_for("redis"), vendor_for("rabbitmq")
    assert redis.settings_urls("redis://b", None) == {"broker_profile": "redis", "redis_url": "redis://b"}
    assert redis.settings_urls("redis://b", "redis://r")["result_backend_url"] == "redis://r"
    assert rabbit.settings_urls("amqp://b", "redis://r") == {
        "broker_profile": "rabbitmq",
        "rabbitmq_url": "amqp://b",
        "redis_url": "redis://r",
    }
    with pytest.raises(ValueError, match="keeps results in Redis"):
        rabbit.settings_urls("amqp://b", None)


def test_only_redis_setups_choose_a_transport() -> None:
    for setup in SETUPS.values():
        chooses = bool(setup.vendor.transports)
        assert setup.transport_for(None) == (DEFAULT_TRANSPORT if chooses else None)
        assert setup.transport_for("kombu") == ("kombu" if chooses else None)
        assert setup.describe()["transports"] == (["brokerstack", "kombu"] if chooses else [])
        assert chooses == (setup.broker == "redis")


def test_a_kombu_run_is_promised_nothing() -> None:
    setup = SETUPS["redis-always"]
    assert setup.promises("broker-kill") and not setup.promises("broker-kill", "kombu")


def test_redelivery_waits_for_the_visibility_timeout_on_redis_only() -> None:
    options = RunOptions(visibility_timeout=10, restore_interval=2.0, restore_throttle=3)
    redis, rabbit = vendor_for("redis"), vendor_for("rabbitmq")
    assert redis.redelivery_delay(options) == redis.unacked_redelivery_delay(options) == 16.0
    assert redis.drain_idle_limit(options) == 46.0
    assert (rabbit.redelivery_delay(options), rabbit.unacked_redelivery_delay(options)) == (0.0, None)
    assert rabbit.drain_idle_limit(options) == 60.0
    assert redis.run_settings(options, "kombu")["redis_transport"] == "kombu"
    assert rabbit.run_settings(options, None) == {}
    redis_only = {"visibility_timeout", "restore_interval", "restore_throttle", "transport"}
    assert set(rabbit.ignored_run_parameters) == redis_only and not redis.ignored_run_parameters


def test_old_records_read_as_the_transport_their_broker_ran() -> None:
    assert record_transport({"transport": "kombu"}) == "kombu"
    assert record_transport({"parameters": {"setup": {"broker": "rabbitmq"}}}) is None
    assert record_transport({"setup": "redis-everysec"}) == DEFAULT_TRANSPORT
    assert record_transport({"setup": "rabbitmq-confirms"}) is None
    assert record_transport({}) == DEFAULT_TRANSPORT  # the first records, Redis only
    assert record_transport({"parameters": {"setup": {"broker": "kafka"}}}) is None


def test_publish_confirms_are_a_rabbitmq_setting() -> None:
    rabbit, redis = vendor_for("rabbitmq"), vendor_for("redis")
    for name in ("rabbitmq-confirms", "rabbitmq-noconfirm"):
        settings = SETUPS[name].settings
        confirm = settings["rabbitmq_confirm_publish"]
        assert rabbit.confirms_publishes(settings) is confirm
        assert rabbit.publish_options(settings) == {"confirm_publish": confirm}
    assert redis.confirms_publishes({}) is None and redis.publish_options({}) == {}


def test_the_priority_cases_are_redis_and_both_rabbitmq_queue_types() -> None:
    from lab.cli.priority import CASES

    assert [(kind, tuple(o.values())) for kind, o in CASES] == [
        ("redis", ()),
        ("rabbitmq", ("classic",)),
        ("rabbitmq", ("quorum",)),
    ]


def test_node_options_are_checked_against_the_kind() -> None:
    with pytest.raises(ValueError, match="rabbit options given for a redis node"):
        make_node("redis", "process", rabbit=RabbitOptions())
    with pytest.raises(ValueError, match="RedisOptions given for a rabbitmq node"):
        make_node("rabbitmq", "process", options=RedisOptions())
    node = make_node("redis", "process", options=RedisOptions(appendonly=True))
    try:
        assert node.options == RedisOptions(appendonly=True)  # type: ignore[attr-defined]
    finally:
        node.close()


def test_every_vendor_sets_what_the_interface_asks() -> None:
    for name, vendor in VENDORS.items():
        assert vendor.name == name
        assert vendor.poll_interval > 0 and vendor.recovery_seconds > 0 and vendor.process_names
        assert isinstance(SETUPS[next(s for s in SETUPS if SETUPS[s].broker == name)].options, vendor.options_type)
