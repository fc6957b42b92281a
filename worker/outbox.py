"""Where the fake senders (e-mail, admin notifications, reports) record what they "sent".

It is a Redis list per kind in the result backend's Redis, so tests and operators can read what a
task did without a real mail server. Entries expire with the results.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis

from worker.backends import redis_client
from worker.idempotent import pending_effects
from worker.settings import load_settings

if TYPE_CHECKING:
    from worker.settings import Settings

KEY_PREFIX = "brokerstack:outbox:"
SWITCH_PREFIX = "brokerstack:switch:"
#: Keep the newest entries only: the outbox is evidence, not an archive.
MAX_ENTRIES = 10_000


@lru_cache(maxsize=8)
def _client(url: str, settings: Settings) -> redis.Redis:
    return redis_client(url, settings, socket_timeout=5, decode_responses=True)


class Outbox:
    def __init__(self, url: str, ttl_seconds: int = 24 * 3600, *, settings: Settings | None = None) -> None:
        """``settings`` carry TLS, Sentinel and the key prefix for ``url``; without them, the
        environment's (a plain redis:// URL needs none)."""
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.settings = settings if settings is not None else load_settings()
        self._prefix = self.settings.redis_global_keyprefix

    def _redis(self) -> redis.Redis:
        return _client(self.url, self.settings)

    def record(self, kind: str, **entry: Any) -> dict[str, Any]:
        """Record one thing "sent". Inside an IdempotentTask (worker.idempotent) the write joins the
        task's claim and happens in the same transaction that completes it: once per task id."""
        entry = {"kind": kind, "at": time.time(), **entry}
        key = self._prefix + KEY_PREFIX + kind
        effects = pending_effects()
        if effects is not None and effects.url == self.url:
            entry["task_id"] = effects.task_id
            payload = json.dumps(entry)
            effects.writes.append(lambda pipe: self._write(pipe, key, payload))
            return entry
        with self._redis().pipeline() as pipe:
            self._write(pipe, key, json.dumps(entry))
            pipe.execute()
        return entry

    def _write(self, pipe: Any, key: str, payload: str) -> None:
        pipe.rpush(key, payload)
        pipe.ltrim(key, -MAX_ENTRIES, -1)
        pipe.expire(key, self.ttl_seconds)

    def read(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(item) for item in self._redis().lrange(self._prefix + KEY_PREFIX + kind, 0, -1)]

    def clear(self, kind: str) -> None:
        self._redis().delete(self._prefix + KEY_PREFIX + kind)

    # Switches the fake services read, so a test or an operator can break and mend them.
    def set_switch(self, name: str, on: bool) -> None:
        if on:
            self._redis().set(self._prefix + SWITCH_PREFIX + name, "1")
        else:
            self._redis().delete(self._prefix + SWITCH_PREFIX + name)

    def switch(self, name: str) -> bool:
        return bool(self._redis().exists(self._prefix + SWITCH_PREFIX + name))


def outbox_for(app: Any) -> Outbox:
    """The outbox of a brokerstack Celery app (see worker.celery_app.create_celery)."""
    settings = app.brokerstack_settings
    return Outbox(settings.result_backend, ttl_seconds=settings.result_expires, settings=settings)
