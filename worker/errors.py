"""Exceptions that mean "the broker (or the result backend) is not there", from any of the client
libraries underneath Celery. Anything else is a bug and should surface as one.

Each broker's client errors are declared by its profile (``BrokerProfile.client_errors``) and
gathered here from the registry, so a broker added to ``worker.brokers.PROFILES`` brings its own."""

from __future__ import annotations

from collections.abc import Iterable

import celery.exceptions
import kombu.exceptions
import redis.exceptions

from worker.brokers import PROFILES, BrokerProfile


def broker_errors(profiles: Iterable[type[BrokerProfile]] | None = None) -> tuple[type[BaseException], ...]:
    """What kombu raises on any broker, every profile's client errors (``profiles``, default the
    registry's) and the socket errors underneath them, once each."""
    chosen = PROFILES.values() if profiles is None else profiles
    return tuple(
        dict.fromkeys(
            (
                kombu.exceptions.OperationalError,
                kombu.exceptions.ConnectionError,
                *(error for profile in chosen for error in profile.client_errors),
                ConnectionError,
                TimeoutError,
                OSError,
            )
        )
    )


#: All registered profiles' at once: the API and the CLI catch these whichever broker is chosen
#: (a tuple built on import, so ``except BROKER_ERRORS`` costs nothing per call).
BROKER_ERRORS: tuple[type[BaseException], ...] = broker_errors()
#: The result backend is Redis on every broker profile (worker.backends), so its errors are
#: redis-py's whichever broker carries the tasks.
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
