"""Settings -> Celery configuration, for both profiles, and the refusals for bad input."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads

from worker.brokers.redis import PRIORITY_STEPS, SENTINEL_TRANSPORT_PATH, TRANSPORT_PATH
from worker.celery_app import create_celery
from worker.config import build_celery_config
from worker.settings import ConfigError, Settings, load_settings
from worker.topology import DEAD_LETTER_EXCHANGE, PRIORITY_MAX, WORK_QUEUES


def config_for(**overrides):
    return build_celery_config(load_settings(**overrides))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Unit tests see only the settings they pass, never the caller's shell."""
    for name in load_settings().to_env():
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("profile", ["redis", "rabbitmq"])
def test_settings_every_profile_shares(profile):
    conf = config_for(broker_profile=profile)
    assert conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["accept_content"] == conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["broker_connection_retry_on_startup"] is True
    assert conf["task_time_limit"] == 1800 and conf["task_soft_time_limit"] == 1740
    assert conf["worker_prefetch_multiplier"] == 1
    assert [q.name for q in conf["task_queues"]] == list(WORK_QUEUES)
    assert conf["task_default_queue"] == "default"
    assert conf["task_routes"]["worker.tasks.batch.long_batch_job"] == {"queue": "low_priority"}
    assert conf["task_routes"]["worker.tasks.email.send_email"] == {"queue": "high_priority"}
    assert set(conf["beat_schedule"]) >= {"heartbeat", "daily-report"}
    # Results live in Redis on both profiles unless configured.
    assert conf["result_backend"] == "redis://localhost:6379/0"


def test_redis_profile():
    conf = config_for(broker_profile="redis", redis_url="redis://cache:6380/2", redis_visibility_timeout=900)
    assert conf["broker_url"] == "redis://cache:6380/2"
    assert conf["broker_transport"] == TRANSPORT_PATH
    options = conf["broker_transport_options"]
    assert options["visibility_timeout"] == 900
    assert options["priority_steps"] == PRIORITY_STEPS == list(range(10))
    assert "confirm_publish" not in options
    assert all(q.queue_arguments == {} for q in conf["task_queues"])


@pytest.mark.parametrize("confirm", [True, False])
def test_rabbitmq_classic_profile(confirm):
    conf = config_for(
        broker_profile="rabbitmq",
        rabbitmq_url="amqp://u:p@rabbit:5672/vh",
        result_backend_url="redis://results:6379/1",
        rabbitmq_confirm_publish=confirm,
    )
    assert conf["broker_url"] == "amqp://u:p@rabbit:5672/vh"
    assert conf["broker_transport_options"] == {"confirm_publish": confirm}
    assert conf["result_backend"] == "redis://results:6379/1"
    assert "broker_transport" not in conf
    for queue in conf["task_queues"]:
        assert queue.durable
        assert queue.queue_arguments == {
            "x-queue-type": "classic",
            "x-max-priority": PRIORITY_MAX,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": f"dead.{queue.name}",
        }


def test_rabbitmq_quorum_profile():
    conf = config_for(broker_profile="rabbitmq", rabbitmq_queue_type="quorum", rabbitmq_delivery_limit=5)
    assert conf["task_default_queue_type"] == "quorum"
    for queue in conf["task_queues"]:
        args = queue.queue_arguments
        assert args["x-queue-type"] == "quorum"
        assert "x-max-priority" not in args  # quorum queues refuse it
        assert args["x-dead-letter-strategy"] == "at-least-once"
        assert args["x-overflow"] == "reject-publish"
        assert args["x-delivery-limit"] == 5


def test_rabbitmq_failover_url_accepted():
    url = "amqp://u:p@n1:5672//;amqp://u:p@n2:5672//"
    assert config_for(broker_profile="rabbitmq", rabbitmq_url=url)["broker_url"] == url


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"broker_profile": "kafka"}, ["BROKER_PROFILE", "'kafka'", "redis", "rabbitmq"]),
        ({"redis_url": "http://localhost:6379"}, ["REDIS_URL", "redis://"]),
        ({"redis_url": "redis://localhost:notaport/0"}, ["REDIS_URL", "malformed"]),
        ({"rabbitmq_url": "amqp://"}, ["RABBITMQ_URL", "no host"]),
        ({"rabbitmq_url": "amqp://a:b@h:5672/;kafka://x"}, ["RABBITMQ_URL", "amqp://"]),
        ({"result_backend_url": "rpc://"}, ["RESULT_BACKEND_URL"]),
        ({"rabbitmq_queue_type": "stream"}, ["RABBITMQ_QUEUE_TYPE", "classic", "quorum"]),
        ({"task_time_limit": 10, "task_soft_time_limit": 20}, ["TASK_SOFT_TIME_LIMIT"]),
        ({"redis_visibility_timeout": 0}, ["REDIS_VISIBILITY_TIMEOUT"]),
    ],
)
def test_bad_settings_fail_in_one_line_naming_the_setting(overrides, names):
    with pytest.raises(ConfigError) as raised:
        load_settings(**overrides)
    message = str(raised.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_production_refuses_development_credentials():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings(environment="production", redis_url="redis://:brokerstack-dev@redis:6379/0", api_key="real-key")
    with pytest.raises(ConfigError, match="RABBITMQ_URL"):
        load_settings(
            environment="production",
            broker_profile="rabbitmq",
            rabbitmq_url="amqp://guest:secret@rabbit:5672//",
            redis_url="redis://:s3cret@redis:6379/0",
            api_key="real-key",
        )
    with pytest.raises(ConfigError, match="API_KEY"):
        load_settings(environment="production", redis_url="redis://:s3cret@redis:6379/0")
    with pytest.raises(ConfigError, match="API_KEY"):
        load_settings(environment="production", redis_url="redis://:s3cret@redis:6379/0", api_key="brokerstack-dev-key")
    # The same development values are fine outside production...
    load_settings(redis_url="redis://:brokerstack-dev@redis:6379/0")
    # ...and real ones are fine in production.
    load_settings(
        environment="production",
        broker_profile="rabbitmq",
        rabbitmq_url="amqp://app:Zx9-long-secret@rabbit:5672/brokerstack",
        redis_url="redis://:Zx9-other-secret@redis:6379/0",
        api_key="k-7f3a",
    )


def test_settings_come_from_the_documented_environment_names(monkeypatch):
    monkeypatch.setenv("BROKER_PROFILE", "rabbitmq")
    monkeypatch.setenv("RABBITMQ_URL", "amqp://u:p@mq:5672/x")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/3")
    monkeypatch.setenv("RESULT_BACKEND_URL", "redis://res:6379/4")
    monkeypatch.setenv("API_KEY", "k")
    monkeypatch.setenv("RABBITMQ_QUEUE_TYPE", "quorum")
    settings = load_settings()
    assert settings.broker_url == "amqp://u:p@mq:5672/x"
    assert settings.result_backend == "redis://res:6379/4"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k"
    assert settings.rabbitmq_queue_type == "quorum"
    assert load_settings(**{}).to_env()["BROKER_PROFILE"] == "rabbitmq"


def test_pickle_payloads_are_refused():
    app = create_celery(load_settings())
    payload = pickle.dumps({"task": "worker.tasks.basic.add"})
    with pytest.raises(ContentDisallowed):
        loads(payload, "application/x-python-serialize", "binary", accept=app.conf.accept_content)


def test_worker_start_with_bad_profile_prints_one_line():
    env = {"BROKER_PROFILE": "kafka", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        # `celery -A worker.celery_app` looks up the module's ``app``: that lookup reads the settings.
        [sys.executable, "-c", "import worker.celery_app as module; module.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "brokerstack: configuration error: BROKER_PROFILE: 'kafka' is not one of 'redis' or 'rabbitmq'"
    ]


def test_every_setting_is_documented():
    reference = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in reference]
    assert not missing, f"document these in docs/configuration.md: {missing}"


# --- issue 9: TLS, Sentinel, key prefix ----------------------------------------------------------


def test_rediss_url_turns_tls_on_for_broker_and_results(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("not parsed here")
    conf = config_for(redis_url="rediss://:pw@cache:6380/0", redis_ssl_ca_certs=str(ca))
    expected = {"ssl_cert_reqs": "required", "ssl_ca_certs": str(ca)}
    # A class-path transport never sees the scheme: without broker_use_ssl it would speak plaintext.
    assert conf["broker_transport"] == TRANSPORT_PATH
    assert conf["broker_use_ssl"] == expected
    assert conf["redis_backend_use_ssl"] == expected


def test_plain_redis_has_no_tls_options():
    conf = config_for(redis_url="redis://cache:6380/0")
    assert "broker_use_ssl" not in conf and "redis_backend_use_ssl" not in conf


def test_client_certificate_settings_reach_both_tls_options(tmp_path):
    files = {name: tmp_path / name for name in ("ca.crt", "client.crt", "client.key")}
    for path in files.values():
        path.write_text("x")
    conf = config_for(
        redis_url="rediss://cache:6380/0",
        redis_ssl_cert_reqs="optional",
        redis_ssl_ca_certs=str(files["ca.crt"]),
        redis_ssl_certfile=str(files["client.crt"]),
        redis_ssl_keyfile=str(files["client.key"]),
    )
    assert (
        conf["broker_use_ssl"]
        == conf["redis_backend_use_ssl"]
        == {
            "ssl_cert_reqs": "optional",
            "ssl_ca_certs": str(files["ca.crt"]),
            "ssl_certfile": str(files["client.crt"]),
            "ssl_keyfile": str(files["client.key"]),
        }
    )


def test_sentinel_url_picks_the_sentinel_transport_and_master():
    url = "sentinel://:pw@s1:26379;sentinel://:pw@s2:26380/0"
    conf = config_for(redis_url=url, redis_sentinel_master="orders")
    assert conf["broker_url"] == conf["result_backend"] == url
    assert conf["broker_transport"] == SENTINEL_TRANSPORT_PATH
    assert conf["broker_transport_options"]["master_name"] == "orders"
    assert conf["broker_transport_options"]["sentinel_kwargs"]["socket_timeout"] > 0
    assert conf["result_backend_transport_options"]["master_name"] == "orders"
    assert "broker_use_ssl" not in conf


def test_sentinel_master_defaults_to_mymaster_and_password_goes_to_the_sentinels():
    conf = config_for(redis_url="sentinel://s1:26379", redis_sentinel_password="sentinel-secret")
    assert conf["broker_transport_options"]["master_name"] == "mymaster"
    assert conf["broker_transport_options"]["sentinel_kwargs"]["password"] == "sentinel-secret"
    assert conf["result_backend_transport_options"]["sentinel_kwargs"]["password"] == "sentinel-secret"


def test_kombu_transport_with_sentinel_lets_the_scheme_choose():
    conf = config_for(redis_url="sentinel://s1:26379", redis_transport="kombu")
    assert "broker_transport" not in conf  # kombu maps sentinel:// to its SentinelTransport
    assert conf["broker_transport_options"]["master_name"] == "mymaster"


def test_sentinel_result_backend_on_the_rabbitmq_profile():
    conf = config_for(broker_profile="rabbitmq", result_backend_url="sentinel://s1:26379", redis_sentinel_master="r")
    assert conf["result_backend"] == "sentinel://s1:26379"
    assert conf["result_backend_transport_options"]["master_name"] == "r"


def test_global_keyprefix_reaches_broker_and_results():
    conf = config_for(redis_global_keyprefix="stack-a:")
    assert conf["broker_transport_options"]["global_keyprefix"] == "stack-a:"
    assert conf["result_backend_transport_options"]["global_keyprefix"] == "stack-a:"
    assert "global_keyprefix" not in config_for()["broker_transport_options"]


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"redis_ssl_cert_reqs": "maybe"}, ["REDIS_SSL_CERT_REQS", "'maybe'", "required", "optional", "none"]),
        ({"redis_ssl_ca_certs": "/no/such/ca.crt"}, ["REDIS_SSL_CA_CERTS", "/no/such/ca.crt"]),
        ({"redis_ssl_certfile": "/no/such/client.crt"}, ["REDIS_SSL_CERTFILE"]),
        ({"redis_ssl_keyfile": "/no/such/client.key"}, ["REDIS_SSL_KEYFILE"]),
        ({"redis_ssl_certfile": "/etc/hostname"}, ["REDIS_SSL_CERTFILE", "REDIS_SSL_KEYFILE"]),
        ({"redis_sentinel_master": ""}, ["REDIS_SENTINEL_MASTER"]),
        ({"redis_global_keyprefix": "a b"}, ["REDIS_GLOBAL_KEYPREFIX", "whitespace"]),
        ({"redis_url": "redis://a:6379;redis://b:6379"}, ["REDIS_URL", "sentinel://"]),
        ({"redis_url": "sentinel://a:26379;redis://b:6379"}, ["REDIS_URL", "sentinel://"]),
        ({"redis_url": "sentinel://"}, ["REDIS_URL", "no host"]),
        ({"result_backend_url": "sentinel://a:26379;http://b"}, ["RESULT_BACKEND_URL"]),
        ({"ledger_url": "sentinel://a:26379"}, ["LEDGER_URL", "redis://"]),
    ],
)
def test_bad_tls_sentinel_settings_fail_in_one_line_naming_the_setting(overrides, names):
    with pytest.raises(ConfigError) as raised:
        load_settings(**overrides)
    message = str(raised.value)
    assert message.startswith("configuration error: ") and "\n" not in message
    for name in names:
        assert name in message


def test_production_finds_development_passwords_in_any_sentinel_url():
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings(
            environment="production",
            api_key="real-key",
            redis_url="sentinel://:s3cret@s1:26379;sentinel://:brokerstack-dev@s2:26379",
        )
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_PASSWORD"):
        load_settings(
            environment="production",
            api_key="real-key",
            redis_url="sentinel://:s3cret@s1:26379",
            redis_sentinel_password="brokerstack-dev",
        )
    load_settings(
        environment="production", api_key="real-key", redis_url="sentinel://:s3cret@s1:26379;sentinel://:s3cret@s2:1"
    )


def test_production_names_every_development_credential_at_once():
    """Issue 11, 6: one attempt per credential made operators restart a stack once per variable."""
    with pytest.raises(ConfigError) as refused:
        load_settings(
            environment="production",
            broker_profile="rabbitmq",
            rabbitmq_url="amqp://brokerstack:brokerstack-dev@mq:5672/x",
            redis_url="redis://:brokerstack-dev@redis:6379/0",
            api_key="brokerstack-dev-key",
        )
    message = str(refused.value)
    for variable in ("RABBITMQ_URL", "REDIS_URL", "API_KEY"):
        assert f"development credentials in {variable}" in message or f"development {variable}" in message
    assert "\n" not in message


def test_a_read_key_needs_an_api_key_of_its_own():
    with pytest.raises(ConfigError, match="API_READ_KEY needs API_KEY"):
        load_settings(api_read_key="reader")
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(api_key="same-key", api_read_key="same-key")
    assert load_settings(api_key="writer", api_read_key="reader").api_read_key is not None


@pytest.mark.parametrize("on", [True, False])
def test_task_events_follow_the_setting(on: bool) -> None:
    """TASK_EVENTS governs both ends: the publisher's task-sent and the worker's task events (the
    compose workers pass no -E that would override it)."""
    config = build_celery_config(load_settings(environment="test", task_events=on))
    assert config["task_send_sent_event"] is on
    assert config["worker_send_task_events"] is on
    assert "--task-events" not in (Path(__file__).parents[2] / "deploy" / "compose.common.yml").read_text()
