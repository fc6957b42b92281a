"""brokerstack's Celery consumer (``worker_consumer``): Celery's, with these changes.

* Poison is recorded *before* the message is let go (worker.dead_letters): on RabbitMQ the dead
  letter is visible the moment it is rejected and should already carry its reason; on Redis the
  rejected message is gone, so the record must exist first. A message that cannot be decoded is
  rejected (so RabbitMQ dead-letters it), where Celery would ack it away.
* A lost broker is retried every 1 to 5 seconds instead of kombu's 2 to 30: a restarted broker
  (RabbitMQ takes about five seconds) gets its workers back within seconds, not half a minute.
* A late ack is sent the moment the task is done when that happens on the event loop's own thread
  (solo and prefork pools). Celery queues it with ``hub.call_soon``, and kombu's hub then polls
  with the next timer's timeout before running what it queued: with ``task_acks_late`` and prefetch
  1 the broker waits for that ack to send the next message, so every task waited up to two seconds
  (measured: 2 tasks/s instead of over 1,000 on RabbitMQ, solo pool). Acks from other threads
  (the threads pool) still go through ``call_soon``, which wakes the loop. Green pools (gevent,
  eventlet) run no hub: Celery's own ``call_soon_ack`` acks at once from the task's greenlet while
  the loop's greenlet waits on the consumer connection, so a transport must take acks from any
  greenlet without writing to that connection (py-amqp serialises frame writes with a lock that
  gevent patches; kombu's Redis transport acks over a pooled connection).
* Green pools drain the event connection only when the broker has sent something on it. Celery's
  loop for them (``synloop``) reads that connection after every consumer frame, so its heartbeats
  are consumed, and waits up to 0.1 s for a frame. With publisher confirms a confirm is usually
  waiting there; without (Celery's default), nothing is, and the loop, taking one message per
  cycle, paid 0.1 s per task: a gevent worker storing results drained 10 tasks/s instead of
  hundreds on RabbitMQ (tests/integration/test_pools.py).
* A stopping worker acks, rather than gives back, every message it still holds whose task already
  succeeded. Celery keeps its requests in weak sets, and the prefork pool can lose a finished
  task's report as it stops (seen under load: the task stored SUCCESS, the pool never read the
  report); the request then vanishes unacknowledged, and the broker, given the message back when
  the connection closes, runs the task a second time (celery/celery#3802). Celery 5.7 settles a
  lost pool process the same way outside a shutdown.
"""

from __future__ import annotations

import functools
import logging
import select
import threading
from typing import Any

from celery import states
from celery.worker import loops
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer
from kombu import Connection

from worker.dead_letters.hooks import record_poison
from worker.errors import BACKEND_ERRORS

logger = logging.getLogger(__name__)

#: Seconds between reconnect attempts: the first wait, the increase per attempt, the longest wait.
RECONNECT_INTERVAL_START = 1.0
RECONNECT_INTERVAL_STEP = 1.0
RECONNECT_INTERVAL_MAX = 5.0


_celery_quick_drain = loops._quick_drain


def _drain_when_readable(connection: Connection, timeout: float = 0.1) -> None:
    sock = getattr(connection.connection, "sock", None)
    if sock is not None:
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted leave the socket quiet
        if not (pending and pending()) and not select.select([sock], [], [], 0)[0]:
            return
    _celery_quick_drain(connection, timeout)


loops._quick_drain = _drain_when_readable


class BrokerstackConsumer(Consumer):
    #: The thread running the event loop; set when the consumer registers with it.
    _event_loop_thread: int | None = None
    #: The requests this worker held when it began to stop, kept alive until it has settled them.
    _held_at_stop: tuple[Any, ...] = ()

    def stop(self) -> None:
        self._held_at_stop = tuple(worker_state.reserved_requests)
        super().stop()

    def shutdown(self) -> None:
        # Before the connection closes: an ack must reach the broker before it takes messages back.
        try:
            self._ack_the_already_succeeded()
        finally:
            self._held_at_stop = ()
            super().shutdown()

    def _ack_the_already_succeeded(self) -> None:
        for request in self._held_at_stop:
            if request.acknowledged or request.ignore_result:
                continue
            try:
                stored = request.task.backend.get_task_meta(request.id).get("status")
            except BACKEND_ERRORS as exc:  # the result store is down: give it back, as Celery would
                logger.warning("cannot read the state of %s[%s] while stopping: %r", request.name, request.id, exc)
                continue
            if stored == states.SUCCESS:
                logger.warning(
                    "Task %s[%s] already succeeded: acking its message instead of giving it back",
                    request.name,
                    request.id,
                )
                request.acknowledge()

    def register_with_event_loop(self, hub: Any) -> None:
        self._event_loop_thread = threading.get_ident()
        super().register_with_event_loop(hub)

    def call_soon_ack(self, p: Any, *args: Any, **kwargs: Any) -> Any:
        if self.hub is None or threading.get_ident() != self._event_loop_thread:
            return super().call_soon_ack(p, *args, **kwargs)
        try:
            p(*args, **kwargs)
        except Exception as exc:  # as Celery's own call_soon_ack: logged, the loop goes on
            logger.exception("acknowledging a message failed: %r", exc)
        return p

    def ensure_connected(self, conn: Connection) -> Connection:
        conn.ensure_connection = functools.partial(  # type: ignore[method-assign]  # the retry pace, per connection
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
