"""Dead letters: one record shape and one operator experience on both brokers.

RabbitMQ dead-letters natively (DLX, ``x-death``); on Redis the worker's hooks capture the same
outcomes into a store in the broker's Redis. ``store_for(app)`` gives the right store.
"""

from __future__ import annotations

from celery import Celery

from worker.dead_letters.base import DeadLetterStore, ReplayOutcome
from worker.dead_letters.record import REASONS, DeadLetter, RawMessage


def store_for(app: Celery) -> DeadLetterStore:
    if app.brokerstack_settings.broker_profile == "rabbitmq":
        from worker.dead_letters.rabbitmq import RabbitMQDeadLetterStore

        return RabbitMQDeadLetterStore(app)
    from worker.dead_letters.redis import RedisDeadLetterStore

    return RedisDeadLetterStore(app)


__all__ = ["REASONS", "DeadLetter", "DeadLetterStore", "RawMessage", "ReplayOutcome", "store_for"]
