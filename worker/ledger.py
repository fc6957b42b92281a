"""The execution ledger: every task run, written by the worker to a Redis *outside* the broker
under test, so failure-injection runs can count what was lost or run twice.

Off unless LEDGER_URL is set. Each task start and finish appends one JSON entry to the run's list
(``brokerstack:ledger:<LEDGER_RUN>:events``); lab.experiments.chaos reads them back and does the accounting.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun

from worker.backends import redis_client
from worker.settings import Settings

KEY_TEMPLATE = "brokerstack:ledger:{run}:events"
#: Ledger writes are the measurement itself: retry a blip rather than lose an entry.
WRITE_ATTEMPTS = 5


def events_key(run: str) -> str:
    return KEY_TEMPLATE.format(run=run)


@lru_cache(maxsize=4)
def _client(url: str, settings: Settings) -> redis.Redis:
    # A rediss:// ledger uses the REDIS_SSL_* settings; the ledger is lab instrumentation in a
    # Redis of its own, so no key prefix.
    return redis_client(url, settings, socket_timeout=5)


def _record(task: Any, event: str, **fields: Any) -> None:
    settings = getattr(task.app, "brokerstack_settings", None)
    if settings is None or not settings.ledger_url:
        return
    request = task.request
    entry = json.dumps(
        {
            "event": event,
            "task_id": request.id,
            "name": task.name,
            "worker": request.hostname,
            "pid": os.getpid(),
            "attempt": request.retries,
            "redelivered": bool((request.delivery_info or {}).get("redelivered")),
            "t": time.time(),
            **fields,
        }
    )
    for attempt in range(WRITE_ATTEMPTS):
        try:
            _client(settings.ledger_url, settings).rpush(events_key(settings.ledger_run), entry)
            return
        except redis.RedisError:
            if attempt == WRITE_ATTEMPTS - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


@task_prerun.connect
def _on_start(sender: Any = None, **_: Any) -> None:
    _record(sender, "start")


@task_postrun.connect
def _on_finish(sender: Any = None, state: str | None = None, **_: Any) -> None:
    _record(sender, "finish", state=state)
