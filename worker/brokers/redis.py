"""Redis as Celery's broker (kombu's Redis transport, with brokerstack's priority order)."""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

from worker.brokers.base import BrokerProfile
from worker.topology import PRIORITY_MAX, PRIORITY_MIN

#: One Redis list per priority level and queue, so every step of the 0..9 scale is distinct.
PRIORITY_STEPS = list(range(PRIORITY_MIN, PRIORITY_MAX + 1))

#: Where Celery finds the transport below (``broker_transport`` accepts a class path).
TRANSPORT_PATH = "worker.brokers.redis:Transport"


class Channel(kombu_redis.Channel):
    """kombu's Redis channel with the priority scale turned round.

    kombu's Redis transport pops priority 0 first, RabbitMQ delivers the highest number first. Users
    get one scale (9 is most urgent) everywhere, so the number a message carries stays the user's
    number (retries and republishing keep it) and only the Redis list it is pushed to is reversed.
    """

    def _get_message_priority(self, message: dict, reverse: bool = False) -> int:
        return super()._get_message_priority(message, reverse=not reverse)


class Transport(kombu_redis.Transport):
    Channel = Channel


class RedisProfile(BrokerProfile):
    name = "redis"

    @property
    def url(self) -> str:
        return self.settings.redis_url

    def transport_options(self) -> dict[str, Any]:
        return {
            "visibility_timeout": self.settings.redis_visibility_timeout,
            "unacked_restore_interval": self.settings.redis_unacked_restore_interval,
            "unacked_restore_throttle": self.settings.redis_unacked_restore_throttle,
            "priority_steps": PRIORITY_STEPS,
            "socket_connect_timeout": self.settings.broker_connection_timeout,
            # Bounds a publish to a Redis that stopped answering; consumers block in BRPOP for
            # 1 s at a time, well inside it.
            "socket_timeout": max(5.0, self.settings.broker_connection_timeout),
            "socket_keepalive": True,
            "health_check_interval": 10,
        }

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        # Redis lists have no server-side arguments; priority comes from PRIORITY_STEPS.
        return {}

    def celery_options(self) -> dict[str, Any]:
        return {
            "broker_transport": TRANSPORT_PATH,
            # Redis keeps an unacked message in its "unacked" hash across reconnects, so a task
            # that was running when the connection dropped can still be acked when it finishes:
            # cancelling it would only make it run again after the visibility timeout.
            "worker_cancel_long_running_tasks_on_connection_loss": False,
        }
