"""Result backend variants."""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class ProducerRedisBackend(RedisBackend):
    """The Redis result backend for processes that publish tasks but never wait on them (the API).

    Celery's Redis backend subscribes to every published task's result channel so that a later
    ``.get()`` can wait on pub/sub. A producer that only reads states by key would pay a SUBSCRIBE
    round trip to Redis per publish, keep the subscriptions until the results are collected, and
    fail publishes when the *result* Redis is down even though the broker is fine.
    """

    def __init__(self, *args: Any, url: str | None = None, **kwargs: Any) -> None:
        app = kwargs["app"]
        super().__init__(*args, url=url or app.conf.result_backend, **kwargs)

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None
