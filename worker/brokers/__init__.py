"""One module per broker. Each turns the shared Settings into what only that broker needs:
its URL, transport options, queue arguments and the few Celery settings that differ.
Everything the brokers have in common is built once in :mod:`worker.config`."""

from celery import Celery

from worker.brokers.base import BrokerProfile
from worker.brokers.rabbitmq import RabbitMQProfile
from worker.brokers.redis import RedisProfile
from worker.dead_letters.base import DeadLetterStore
from worker.settings import Settings

PROFILES: dict[str, type[BrokerProfile]] = {
    RedisProfile.name: RedisProfile,
    RabbitMQProfile.name: RabbitMQProfile,
}


def profile_for(settings: Settings) -> BrokerProfile:
    """The broker profile that BROKER_PROFILE names."""
    return PROFILES[settings.broker_profile](settings)


def store_for(app: Celery) -> DeadLetterStore:
    """The dead-letter store of the broker ``app`` is configured for."""
    return profile_for(app.brokerstack_settings).dead_letter_store(app)


__all__ = ["PROFILES", "BrokerProfile", "RabbitMQProfile", "RedisProfile", "profile_for", "store_for"]
