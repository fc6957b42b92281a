"""Signals during a long lab run (chaos, bench): SIGTERM is treated like Ctrl-C, and the cleanup
that follows cannot be cut short by a second one. Both only act in the main thread, the only
one Python delivers signals to."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def sigterm_raises(exception: type[BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM raises ``exception`` (a KeyboardInterrupt subclass, so every
    ``finally`` and ``except KeyboardInterrupt`` of the run cleans up as on Ctrl-C)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise exception()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def no_interrupts() -> Iterator[None]:
    """Hold off SIGINT and SIGTERM while the block runs (cleanup must finish)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
