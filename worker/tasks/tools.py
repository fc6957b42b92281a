"""Tasks for failure injection and benchmarks: they do nothing, wait, or fail on purpose."""

from __future__ import annotations

import os
import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

#: Longest accepted sleep, so a typo cannot park a worker for days.
MAX_SLEEP_SECONDS = 3600


class InjectedFailure(Exception):
    """Raised by ``fail``: a deliberate, permanent task failure."""


@shared_task
def noop() -> None:
    return None


@shared_task
def sleep(seconds: float, ignore_soft_limit: bool = False) -> float:
    """Waits ``seconds``. ``ignore_soft_limit`` plays a task stuck where the soft time limit
    cannot reach it (C code, a blocking call), so only the hard limit ends it."""
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SLEEP_SECONDS}")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            time.sleep(left)
        except SoftTimeLimitExceeded:
            if not ignore_soft_limit:
                raise
    return seconds


@shared_task(max_retries=0)
def fail(message: str = "failed on purpose") -> None:
    raise InjectedFailure(message)


@shared_task
def crash() -> None:
    """Kills the worker process running it, like an OOM kill. Not exposed through the API: it is
    for demonstrating redelivery loops and delivery limits."""
    os._exit(137)
