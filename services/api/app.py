"""The producer API: ``uvicorn --factory services.api.app:create_app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI

from services.api.body_limit import BodySizeLimit
from services.api.catalog import TaskCatalog
from services.api.docs import install_docs
from services.api.errors import install_error_handlers
from services.api.metrics_http import install_http_metrics
from services.api.producer import Producer, ServiceUnavailable
from services.api.published import PublishedTasks
from services.api.routes import dlq, health, metrics, tasks, users, workflows
from worker.celery_app import create_celery, settings_or_exit
from worker.dead_letters import store_for
from worker.settings import Settings

#: Threads that run blocking broker calls. Celery's connection pool (BROKER_POOL_LIMIT) is the real
#: limit on concurrent publishes; a few more threads let result reads proceed meanwhile.
EXTRA_THREADS = 4

logger = logging.getLogger("brokerstack.api")


def create_app(settings: Settings | None = None, *, celery_app: Celery | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment, exiting on invalid ones).

    ``celery_app``: publish through this app instead of the one ``settings`` build; the fast tests
    pass one on Celery's in-memory transport (settings themselves accept only real brokers)."""
    settings = settings or settings_or_exit()
    if celery_app is None:
        celery_app = create_celery(settings, main="api", producer_only=True)
    producer = Producer(
        celery_app, timeout=settings.publish_timeout, threads=settings.broker_pool_limit + EXTRA_THREADS
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # RabbitMQ drops a dead letter whose queue does not exist yet (say a task expires before
        # any worker ran): declare it now if the broker is there; workers declare it too.
        try:
            await producer.publish(app.state.dead_letters.ensure_declared)
        except ServiceUnavailable as exc:
            logger.warning("broker not reachable at start-up (%s); serving 503 until it is", exc.detail)
        yield
        producer.close()

    app = FastAPI(
        title="brokerstack producer API",
        version="0.1.0",
        summary=f"Enqueue Celery tasks on {settings.broker_profile}",
        lifespan=lifespan,
        # install_docs serves both pages without a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.producer = producer
    app.state.catalog = TaskCatalog(celery_app, settings)
    app.state.users = users.UserRepository()
    app.state.dead_letters = store_for(celery_app)
    app.state.published = PublishedTasks(celery_app)
    for module in (health, metrics, tasks, workflows, users, dlq):
        app.include_router(module.router)
    install_docs(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    install_http_metrics(app)
    return app
