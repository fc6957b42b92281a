"""Which task ids this API published: the difference between "pending" and "never heard of".

Celery's result backend answers PENDING for any id it holds no result for, so without a record a
typo in a task id polls as PENDING forever. The API records every id it hands out (single tasks,
every step of a workflow, the tasks a signup starts, dead letters it replays) next to the results,
with the results' lifetime (RESULT_EXPIRES), and answers 404 for an id that is neither recorded nor
has a result.

What it does not record: tasks other producers send (beat's periodic tasks, ``brokerstack dlq
replay`` from the command line, tasks a worker sends itself). Those are found once a worker has
started them (``task_track_started``): until then they are 404 here like any unknown id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TypeVar

from celery import Celery
from celery.backends.base import KeyValueStoreBackend
from celery.backends.redis import RedisBackend

from services.api.producer import Producer, ResultBackendUnavailable

T = TypeVar("T")
logger = logging.getLogger("brokerstack.api")

#: Appended to Celery's own result key (``celery-task-meta-<id>``, with REDIS_GLOBAL_KEYPREFIX): it
#: lives and is prefixed beside the result, and since '/' cannot occur in a task id the API accepts
#: (schemas.TASK_ID_PATTERN) no request can read the record as if it were a result.
RECORD_SUFFIX = "/published"


class PublishedTasks:
    def __init__(self, celery_app: Celery) -> None:
        self.celery = celery_app

    @property
    def backend(self) -> KeyValueStoreBackend:
        # Celery keeps one backend per thread; the calls run on the producer's threads.
        return self.celery.backend

    def _key(self, task_id: str) -> bytes | str:
        return self.backend.get_key_for_task(task_id, key=RECORD_SUFFIX)

    def record(self, task_ids: Iterable[str]) -> None:
        """Remember ``task_ids`` for RESULT_EXPIRES seconds (a blocking call: run it via
        ``producer.read``)."""
        keys = [self._key(task_id) for task_id in task_ids]
        if not keys:
            return
        if isinstance(self.backend, RedisBackend):
            # One round trip, and without RedisBackend.set's retry loop and PUBLISH: the caller's
            # deadline is the retry policy here.
            with self.backend.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, b"1", ex=self.backend.expires or None)
                pipe.execute()
            return
        for key in keys:
            self.backend.set(key, "1")

    def is_recorded(self, task_id: str) -> bool:
        if isinstance(self.backend, RedisBackend):
            return bool(self.backend.client.exists(self._key(task_id)))
        return self.backend.get(self._key(task_id)) is not None


async def publish_recorded(
    producer: Producer, published: PublishedTasks, task_ids: list[str], send: Callable[[], T]
) -> T:
    """Publish with ``send`` while recording ``task_ids`` (chosen before publishing), side by side:
    the answer waits for both, so a poll right after it finds the record.

    A publish does not fail because the *result* Redis is down (workers retry storing results and
    the broker is fine): the record is then skipped and logged, and the ids poll as 404 until a
    worker has started them. A record that fails after the message went out must not turn into an
    error either: the client would retry and the task run twice.
    """
    sent, recorded = await asyncio.gather(
        producer.publish(send), producer.read(lambda: published.record(task_ids)), return_exceptions=True
    )
    if isinstance(sent, BaseException):
        raise sent
    if isinstance(recorded, ResultBackendUnavailable):
        logger.warning("published %s but could not record it (%s)", ", ".join(task_ids), recorded.detail)
    elif isinstance(recorded, BaseException):
        logger.error("published %s but could not record it", ", ".join(task_ids), exc_info=recorded)
    return sent
