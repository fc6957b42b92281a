"""Exceptions that mean "the broker (or the result backend) is not there", from any of the client
libraries underneath Celery. Anything else is a bug and should surface as one."""

from __future__ import annotations

import amqp.exceptions
import celery.exceptions
import kombu.exceptions
import redis.exceptions

from worker.brokers.redis.errors import UNWRITABLE_ERRORS

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    kombu.exceptions.ConnectionError,
    amqp.exceptions.RecoverableConnectionError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    amqp.exceptions.MessageNacked,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # A Redis primary that is up but takes no writes (failover, min-replicas-to-write): a 503.
    *UNWRITABLE_ERRORS,
    ConnectionError,
    TimeoutError,
    OSError,
)
BACKEND_ERRORS: tuple[type[BaseException], ...] = (
    # Celery wraps a result read that failed on the connection in this (GET /tasks/{id}).
    celery.exceptions.BackendGetMetaError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
    OSError,
)
