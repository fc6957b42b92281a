"""One module per broker. Each turns the shared Settings into what only that broker needs:
its URL, transport options, queue arguments and the few Celery settings that differ.
Everything the brokers have in common is built once in :mod:`worker.config`."""

from worker.brokers.base import BrokerProfile
from worker.brokers.rabbitmq import RabbitMQProfile
from worker.brokers.redis import RedisProfile
from worker.settings import Settings

PROFILES: dict[str, type[BrokerProfile]] = {
    RedisProfile.name: RedisProfile,
    RabbitMQProfile.name: RabbitMQProfile,
}


def profile_for(settings: Settings) -> BrokerProfile:
    """The broker profile that BROKER_PROFILE names."""
    return PROFILES[settings.broker_profile](settings)


__all__ = ["PROFILES", "BrokerProfile", "RabbitMQProfile", "RedisProfile", "profile_for"]
