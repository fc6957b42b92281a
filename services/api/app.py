"""The producer API: ``uvicorn --factory services.api.app:create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from services.api.body_limit import BodySizeLimit
from services.api.catalog import TaskCatalog
from services.api.errors import install_error_handlers
from services.api.producer import Producer
from services.api.routes import health, tasks, users, workflows
from worker.celery_app import create_celery, settings_or_exit
from worker.settings import Settings

#: Threads that run blocking broker calls. Celery's connection pool (BROKER_POOL_LIMIT) is the real
#: limit on concurrent publishes; a few more threads let result reads proceed meanwhile.
EXTRA_THREADS = 4


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or settings_or_exit()
    celery_app = create_celery(settings, main="api", producer_only=True)
    producer = Producer(
        celery_app, timeout=settings.publish_timeout, threads=settings.broker_pool_limit + EXTRA_THREADS
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        producer.close()

    app = FastAPI(
        title="brokerstack producer API",
        version="0.1.0",
        summary=f"Enqueue Celery tasks on {settings.broker_profile}",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.producer = producer
    app.state.catalog = TaskCatalog(celery_app, settings)
    app.state.users = users.UserRepository()
    for module in (health, tasks, workflows, users):
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    return app
