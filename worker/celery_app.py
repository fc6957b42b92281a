"""The Celery application: ``celery -A worker.celery_app worker|beat``.

``create_celery(settings)`` builds an app from a Settings object (the API and the tests build their
own); the module-level ``app`` is the one built from the environment for the ``celery`` command.
"""

from __future__ import annotations

import importlib

from celery import Celery

from worker import ledger  # noqa: F401 - connects the execution-ledger signal handlers
from worker.dead_letters import hooks  # noqa: F401 - connects the dead-letter signal handlers
from worker.config import TASK_MODULES, build_celery_config
from worker.settings import ConfigError, Settings, load_settings


def create_celery(settings: Settings, *, main: str = "worker", producer_only: bool = False) -> Celery:
    """A Celery app for ``settings``. ``producer_only`` is for processes that publish and read
    results but never block on them (the API): see worker.backends.ProducerRedisBackend."""
    app = Celery(main, include=list(TASK_MODULES), set_as_current=False)
    app.conf.update(build_celery_config(settings))
    if producer_only:
        app.backend_cls = "worker.backends:ProducerRedisBackend"
    # Tasks and hooks that need more than Celery's own settings (the outbox, the DLQ store) read
    # them from here, never from the environment.
    app.brokerstack_settings = settings
    # Tasks are shared_tasks: importing their modules registers them on every app, so a producer
    # can look tasks up by name without starting a worker.
    for module in TASK_MODULES:
        importlib.import_module(module)
    return app


def settings_or_exit(**overrides: object) -> Settings:
    """Settings from the environment, or exit with the one-line reason (no traceback)."""
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        raise SystemExit(f"brokerstack: {exc}") from None


app = create_celery(settings_or_exit())
app.set_current()
