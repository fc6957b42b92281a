"""Publishing to the broker and reading results without blocking the event loop, within a bound.

Celery's client calls are blocking (sockets, publisher confirms, retries). They run here on a
small thread pool that reuses Celery's pooled broker connections, and every call has a deadline:
when the broker or the result backend is down the caller gets ``BrokerUnavailable`` /
``ResultBackendUnavailable`` after at most ``timeout`` seconds, never a hang, and never a success
for a message the broker did not take.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from celery import Celery
from celery.exceptions import BackendGetMetaError
from celery.result import AsyncResult, GroupResult

from worker.errors import BACKEND_ERRORS, BROKER_ERRORS

#: What a result read raises when the backend is not there. With result_backend_always_retry
#: Celery retries a connection error a few times, then wraps it in BackendGetMetaError: that is
#: the same outage, reached after the retries instead of before them.
READ_ERRORS: tuple[type[BaseException], ...] = (*BACKEND_ERRORS, BackendGetMetaError)

T = TypeVar("T")


class ServiceUnavailable(Exception):
    """A dependency did not answer in time; the API turns this into 503."""

    error = "unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BrokerUnavailable(ServiceUnavailable):
    error = "broker_unavailable"


class ResultBackendUnavailable(ServiceUnavailable):
    error = "result_backend_unavailable"


class DeadlineExpired(Exception):
    """A queued call started after its caller had already been told 503; it must not run."""


class Producer:
    def __init__(self, celery_app: Celery, *, timeout: float, threads: int) -> None:
        self.celery = celery_app
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="publish")
        #: Outcomes of broker calls since start, for /metrics.
        self.counts = {"ok": 0, "unavailable": 0}

    async def publish(self, fn: Callable[[], T]) -> T:
        """Run a publishing call (returns what ``fn`` returns) or raise BrokerUnavailable."""
        try:
            result = await self._call(fn, BROKER_ERRORS, BrokerUnavailable, "broker")
        except BrokerUnavailable:
            self.counts["unavailable"] += 1
            raise
        self.counts["ok"] += 1
        return result

    async def read(self, fn: Callable[[], T]) -> T:
        """Run a result-backend read or raise ResultBackendUnavailable."""
        return await self._call(fn, READ_ERRORS, ResultBackendUnavailable, "result backend")

    async def _call(
        self,
        fn: Callable[[], T],
        errors: tuple[type[BaseException], ...],
        unavailable: type[ServiceUnavailable],
        what: str,
    ) -> T:
        deadline = time.monotonic() + self.timeout

        def guarded() -> T:
            # A call that waited in the pool past its deadline was already answered with 503:
            # running it now would store a message the client was told was not stored.
            if time.monotonic() >= deadline:
                raise DeadlineExpired
            return fn()

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, guarded), self.timeout)
        except (TimeoutError, DeadlineExpired):
            raise unavailable(f"{what} did not answer within {self.timeout:g} s") from None
        except errors as exc:
            # Name the error underneath a wrapper (BackendGetMetaError), which says only "failed to get meta".
            cause = (exc.__cause__ or exc.__context__) if isinstance(exc, BackendGetMetaError) else None
            shown = cause or exc
            raise unavailable(f"{what} unreachable: {type(shown).__name__}: {shown}") from None

    # --- the calls the routes make --------------------------------------------------------------

    def result(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self.celery)

    def restore_group(self, group_id: str) -> GroupResult | None:
        return GroupResult.restore(group_id, app=self.celery)

    def check_broker(self) -> None:
        with self.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=self.timeout)

    def check_result_backend(self) -> None:
        self.celery.backend.client.ping()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.celery.close()
