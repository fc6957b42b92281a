"""Dead letters: one record shape and one operator experience on both brokers.

RabbitMQ dead-letters natively (DLX, ``x-death``); on Redis the worker's hooks capture the same
outcomes into a store in the broker's Redis. Each store lives with its broker
(``worker/brokers/<broker>/dead_letters.py``); ``store_for(app)`` gives the right one.
"""

from __future__ import annotations

from celery import Celery

from worker.dead_letters.base import DeadLetterStore, ReplayOutcome
from worker.dead_letters.record import REASONS, DeadLetter, RawMessage


def store_for(app: Celery) -> DeadLetterStore:
    """The store of the broker ``app`` is configured for (``worker.brokers.store_for``: imported
    here when called, since the brokers' stores build on this package)."""
    from worker.brokers import store_for as broker_store_for

    return broker_store_for(app)


__all__ = ["REASONS", "DeadLetter", "DeadLetterStore", "RawMessage", "ReplayOutcome", "store_for"]
