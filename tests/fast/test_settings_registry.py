"""The settings take their brokers from the registry (worker.brokers.PROFILES): which
BROKER_PROFILE values exist, which setting holds each broker's URL, how that URL is checked and
what production's refusal names. A broker registered there is a valid BROKER_PROFILE with no line
changed in worker/settings.py beyond the field that holds its URL."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from celery import Celery
from pydantic import SecretStr, ValidationError

from worker.brokers import PROFILES, BrokerProfile
from worker.dead_letters import DeadLetterStore
from worker.settings import ConfigError, Settings, load_settings


class SqsSettings(Settings):
    """What a new broker adds to the settings: the field with its URL (its env name)."""

    sqs_url: str = "sqs://sqs.local:9324"


class SqsProfile(BrokerProfile):
    """A stand-in broker: it only has to say where its URL is and how it is checked."""

    name = "sqs"
    url_setting = "sqs_url"
    password_variable = "SQS_SECRET_KEY"

    @classmethod
    def check_url(cls, value: str) -> str:
        if not value.startswith("sqs://"):
            raise ValueError(f"scheme must be sqs:// (got {value!r})")
        return value

    def transport_options(self) -> dict[str, Any]:
        return {}

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        return {}

    @property
    def max_delay(self) -> tuple[int, str]:
        return 900, "SQS holds a message for at most 15 minutes"

    def delayed_depth(self, app: Celery) -> int:
        return 0

    def dead_letter_store(self, app: Celery) -> DeadLetterStore:
        raise NotImplementedError


@pytest.fixture
def sqs_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROFILES, SqsProfile.name, SqsProfile)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests see only the settings they pass, never the caller's shell."""
    for name in (*load_settings().to_env(), "SQS_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("sqs_registered")
def test_a_registered_profile_is_a_broker_profile_reading_its_own_url() -> None:
    settings = SqsSettings(broker_profile="sqs", sqs_url="sqs://queue.example:9324")
    assert settings.broker_url == "sqs://queue.example:9324"
    assert SqsProfile(settings).url == settings.broker_url
    # The results stay in Redis whichever broker carries the tasks.
    assert settings.result_backend == settings.redis_url


@pytest.mark.usefixtures("sqs_registered")
def test_a_registered_profile_checks_its_url_whichever_profile_is_chosen() -> None:
    with pytest.raises(ValidationError) as refused:
        SqsSettings(broker_profile="redis", sqs_url="http://queue.example")
    [error] = refused.value.errors()
    assert error["loc"] == ("sqs_url",)
    assert error["msg"] == "Value error, scheme must be sqs:// (got 'http://queue.example')"


@pytest.mark.usefixtures("sqs_registered")
def test_the_choices_follow_the_registry() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(broker_profile="kafka")
    assert str(refused.value) == (
        "configuration error: BROKER_PROFILE: 'kafka' is not one of 'redis', 'rabbitmq' or 'sqs'"
    )


@pytest.mark.usefixtures("sqs_registered")
def test_production_names_the_registered_brokers_url_and_its_compose_variable() -> None:
    with pytest.raises(ValueError, match=r"SQS_URL.*SQS_SECRET_KEY") as refused:
        SqsSettings(
            environment="production",
            api_key=SecretStr("a-real-key"),
            broker_profile="sqs",
            sqs_url="sqs://brokerstack:brokerstack-dev@queue.example",
            redis_url="redis://:own-password@cache:6379/0",
        )
    assert "REDIS_URL" not in str(refused.value)


def test_an_unregistered_name_is_refused_even_with_a_url_field() -> None:
    with pytest.raises(ConfigError, match="BROKER_PROFILE: 'sqs' is not one of 'redis' or 'rabbitmq'"):
        load_settings(broker_profile="sqs")


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_reads_and_checks_its_own_setting(name: str) -> None:
    profile = PROFILES[name]
    assert profile.url_setting in Settings.model_fields
    with pytest.raises(ConfigError, match=f"^configuration error: {profile.url_setting.upper()}: "):
        load_settings(**{profile.url_setting: "http://example.invalid"})
    settings = load_settings(broker_profile=name)
    assert settings.broker_url == profile(settings).url == getattr(settings, profile.url_setting)


def test_broker_profile_name_is_the_literal_of_the_registry() -> None:
    from worker.settings import BrokerProfileName

    assert get_args(BrokerProfileName) == tuple(PROFILES)
