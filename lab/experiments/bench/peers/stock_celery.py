"""Stock Celery with brokerstack's settings: the peer ``brokerstack bench`` compares the defaults with.

``celery -A lab.experiments.bench.peers.stock_celery worker`` runs it. The app takes every Celery
setting brokerstack's defaults set (``worker.config.build_celery_config``: late acks, prefetch
multiplier, ``task_track_started``, results stored, JSON, the same queues with the same arguments)
and nothing brokerstack adds on top: Celery's own consumer (no ``worker_consumer``), Celery's own
Redis result backend (no ``backend_cls``), kombu's own transport (the settings it is built from say
so: ``REDIS_TRANSPORT=kombu`` where the broker has a choice), no broker profile hooks
(``prepare_app``), no brokerstack signal handlers. Its one task is a no-op registered under the
name brokerstack's no-op has, so the same backlog runs on either.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery

from worker.config import build_celery_config
from worker.settings import Settings

#: The no-op's name: brokerstack's (lab.experiments.bench.e2e.NOOP), so a backlog is the same message.
NOOP = "worker.tasks.tools.noop"
#: What brokerstack adds to Celery that stock Celery does not have (its consumer subclass, beat).
BROKERSTACK_ONLY = ("worker_consumer", "beat_schedule")

_app: Celery | None = None
_lock = threading.Lock()


def stock_config(settings: Settings) -> dict[str, Any]:
    """brokerstack's Celery settings for ``settings`` without what only brokerstack's Celery has."""
    return {key: value for key, value in build_celery_config(settings).items() if key not in BROKERSTACK_ONLY}


def create_stock_celery(settings: Settings, *, main: str = "stock-celery") -> Celery:
    """A plain ``Celery`` app with brokerstack's Celery settings for ``settings`` and a no-op task."""
    app = Celery(main, set_as_current=False)
    app.conf.update(stock_config(settings))

    @app.task(name=NOOP)
    def noop() -> None:
        return None

    return app


def __getattr__(name: str) -> Any:
    # ``celery -A lab.experiments.bench.peers.stock_celery`` looks ``app`` up: built from the
    # environment (the bench passes the settings' to_env()) on first access.
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _lock:
        if _app is None:
            from worker.settings import load_settings

            _app = create_stock_celery(load_settings())
            _app.set_current()
        return _app
