"""brokerstack's Celery consumer (``worker_consumer``): Celery's, with two changes.

* Poison is recorded *before* the message is let go (worker.dead_letters): on RabbitMQ the dead
  letter is visible the moment it is rejected and should already carry its reason; on Redis the
  rejected message is gone, so the record must exist first. A message that cannot be decoded is
  rejected (so RabbitMQ dead-letters it), where Celery would ack it away.
* A lost broker is retried every 1 to 5 seconds instead of kombu's 2 to 30: a restarted broker
  (RabbitMQ takes about five seconds) gets its workers back within seconds, not half a minute.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer import Consumer
from kombu import Connection

from worker.dead_letters.hooks import record_poison

logger = logging.getLogger(__name__)

#: Seconds between reconnect attempts: the first wait, the increase per attempt, the longest wait.
RECONNECT_INTERVAL_START = 1.0
RECONNECT_INTERVAL_STEP = 1.0
RECONNECT_INTERVAL_MAX = 5.0


class BrokerstackConsumer(Consumer):
    def ensure_connected(self, conn: Connection) -> Connection:
        conn.ensure_connection = functools.partial(
            conn.ensure_connection,
            interval_start=RECONNECT_INTERVAL_START,
            interval_step=RECONNECT_INTERVAL_STEP,
            interval_max=RECONNECT_INTERVAL_MAX,
        )
        return super().ensure_connected(conn)

    def on_unknown_task(self, body: Any, message: Any, exc: BaseException) -> None:
        record_poison(self, message, exc, "unregistered task")
        super().on_unknown_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        record_poison(self, message, None, "not a Celery task message")
        super().on_unknown_message(body, message)

    def on_invalid_task(self, body: Any, message: Any, exc: BaseException) -> None:
        record_poison(self, message, exc, "invalid task message")
        super().on_invalid_task(body, message, exc)

    def on_decode_error(self, message: Any, exc: BaseException) -> None:
        logger.error("dead-lettering an undecodable message (%s): %s", message.content_type, exc)
        record_poison(self, message, exc, "undecodable")
        message.reject(requeue=False)
