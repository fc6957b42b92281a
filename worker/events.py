"""Celery's task-event dispatcher, except that only the event loop's thread publishes.

With an event loop (the solo, prefork and threads pools), Celery buffers task events and the loop
flushes the buffer. A thread that fills the buffer flushes it itself, and on the threads pool that
is a task thread. The event connection is also registered with the loop (for its heartbeats), so
the loop reads that socket whenever it is readable. With publisher confirms (RabbitMQ) the task
thread then waits on the same socket for its confirm: when the loop read the confirm first, the
thread waited for the broker's next frame, a heartbeat up to a minute away, holding the
dispatcher's lock, and the loop, flushing too, waited for the lock. A threads worker drained
7 tasks/s instead of over 1,000 (tests/integration/test_pools.py). Here a thread other than the
loop's hands the flush to the loop, which wakes for it; nothing else changes.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.app.events import Events
from celery.events.dispatcher import EventDispatcher


class LoopFlushedEventDispatcher(EventDispatcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The worker builds its dispatcher on the event loop's thread.
        self._loop_thread = threading.get_ident()

    def flush(self, errors: bool = True, groups: bool = True) -> None:
        if self.on_send_buffered is not None and threading.get_ident() != self._loop_thread:
            self.on_send_buffered()  # the loop flushes: Consumer.on_send_event_buffered
            return
        super().flush(errors=errors, groups=groups)


class BrokerstackEvents(Events):
    dispatcher_cls = "worker.events:LoopFlushedEventDispatcher"
