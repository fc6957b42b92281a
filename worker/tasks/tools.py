"""Tasks for failure injection and benchmarks: they do nothing, wait, or fail on purpose."""

from __future__ import annotations

import os
import time

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from worker.idempotent import IdempotentTask
from worker.outbox import outbox_for

#: Longest accepted sleep, so a typo cannot park a worker for days.
MAX_SLEEP_SECONDS = 3600
#: guarded_noop's claim lease (seconds). Its body takes milliseconds; the default lease (the hard
#: time limit, 30 min) would hold a claim left by a killed run, and so the chaos runs' drain, that long.
GUARDED_NOOP_LEASE = 15.0
#: The outbox kind guarded_noop records its effect under (one entry per task id when the guarantee holds).
GUARDED_NOOP_OUTBOX = "guarded_noop"


class InjectedFailure(Exception):
    """Raised by ``fail``: a deliberate, permanent task failure."""


@shared_task
def noop() -> None:
    return None


@shared_task(bind=True, base=IdempotentTask, claim_lease=GUARDED_NOOP_LEASE)
def guarded_noop(self: Task) -> None:
    """noop with the exactly-once guarantee: its one effect is an outbox entry, committed with its
    claim. The chaos load mixes it with plain noops to count duplicated effects apart from runs."""
    outbox_for(self.app).record(GUARDED_NOOP_OUTBOX)


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
