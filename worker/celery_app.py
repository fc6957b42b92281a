"""The Celery application: ``celery -A worker.celery_app worker|beat``.

``create_celery(settings)`` builds an app from a Settings object (the API, the CLI and the tests
build their own). Importing this module builds nothing and reads no environment: the module
attribute ``app``, the one the ``celery`` command (``-A worker.celery_app``), Flower and the
container healthcheck use, is built from the environment on first access and then reused.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from celery import Celery

from worker import ledger  # noqa: F401 - connects the execution-ledger signal handlers
from worker.brokers import profile_for
from worker.config import TASK_MODULES, build_celery_config
from worker.dead_letters import hooks  # noqa: F401 - connects the dead-letter signal handlers
from worker.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    #: Built on first access by ``__getattr__`` below (mypy sees a plain attribute).
    app: Celery

_app: Celery | None = None
_app_lock = threading.Lock()


def create_celery(settings: Settings, *, main: str = "worker", producer_only: bool = False) -> Celery:
    """A Celery app for ``settings``. ``producer_only`` is for processes that publish and read
    results but never block on them (the API): see worker.backends.ProducerRedisBackend."""
    celery = Celery(main, include=list(TASK_MODULES), set_as_current=False, events="worker.events:BrokerstackEvents")
    celery.conf.update(build_celery_config(settings))
    profile_for(settings).prepare_app(celery)  # e.g. RabbitMQ's delayed delivery (docs/delayed-tasks.md)
    # brokerstack's Redis backends: a clear line for a TLS failure, Sentinel by URL; the producer's
    # never subscribes to results it does not wait on.
    celery.backend_cls = "worker.backends:" + ("ProducerRedisBackend" if producer_only else "BrokerstackRedisBackend")
    # Tasks and hooks that need more than Celery's own settings (the outbox, the DLQ store) read
    # them from here, never from the environment.
    celery.brokerstack_settings = settings
    # Tasks are shared_tasks: importing their modules registers them on every app, so a producer
    # can look tasks up by name without starting a worker.
    for module in TASK_MODULES:
        importlib.import_module(module)
    return celery


def settings_or_exit(**overrides: object) -> Settings:
    """Settings from the environment, or exit with the one-line reason (no traceback)."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise SystemExit(f"brokerstack: {exc}") from None


def environment_app() -> Celery:
    """The process-wide app built from the environment (once), made Celery's current app. Exits
    with the one-line reason when the settings are invalid, as ``celery worker`` start-up should."""
    global _app
    with _app_lock:
        if _app is None:
            _app = create_celery(settings_or_exit())
            _app.set_current()
        return _app


def __getattr__(name: str) -> Celery:
    # ``celery -A worker.celery_app`` looks up ``app`` on the module: that lookup builds it.
    if name == "app":
        return environment_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
