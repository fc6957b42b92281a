"""Redis as Celery's broker: the profile, brokerstack's transport (``worker.brokers.redis:Transport``
and ``:SentinelTransport``) and its Lua script."""

from worker.brokers.redis.profile import RedisProfile
from worker.brokers.redis.transport import (
    PRIORITY_STEPS,
    SENTINEL_TRANSPORT_PATH,
    TRANSPORT_PATH,
    SentinelTransport,
    Transport,
    doorbell_key,
)

__all__ = [
    "PRIORITY_STEPS",
    "SENTINEL_TRANSPORT_PATH",
    "TRANSPORT_PATH",
    "RedisProfile",
    "SentinelTransport",
    "Transport",
    "doorbell_key",
]
