"""Effectively-once effects per task id: ``@shared_task(base=IdempotentTask)``.

Both brokers deliver at least once: a worker killed after a task's effect and before its late ack
gets the message redelivered, and a producer that retries a publish (an API client retrying a 503
with the same Idempotency-Key) sends the same task id twice. An ``IdempotentTask`` runs its body
under a **claim** on its task id in the result backend's Redis:

1. **claim**, atomically, before the body: ``SET NX`` with a lease (the task's hard time limit plus
   a margin: no run of it can outlive that). A run that finds the id **done** returns the stored
   result without running the body; one that finds it **claimed** by a live run looks again when
   the lease would end (the other run is going on, or died and its lease must lapse first). That
   wait is not one of the task's retries (its ``max_retries`` stays the body's budget): it is
   bounded in time, CLAIM_WAIT_LEASES leases, and ends in ClaimWaitExceeded.
2. the body runs. The effects it records through brokerstack's outbox (``worker.outbox``) are not
   written yet: they are collected.
3. **complete**, in one MULTI/EXEC guarded by WATCH on the claim: the collected effects are written
   *and* the claim becomes "done" (with the result, for IDEMPOTENCY_TTL) together, only if the
   claim is still this run's. A body that raises releases the claim and writes nothing, so its
   retry runs it again.

A worker that dies between 1 and 3 wrote nothing (the effects were only collected) and leaves a
claim that lapses with its lease; the redelivered message then claims again and the effect happens
once. So for effects recorded in the same Redis as the claim the guarantee is **exactly once per
task id**; for an effect outside it (a real mail API, a payment) nothing can make the effect and the
completion one transaction, and a death in between means the effect may happen again after the
lease: pass the task id to such a service as *its* idempotency key (docs/idempotency.md).
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import redis
from celery import Task
from celery.exceptions import Reject, Retry

from worker.backends import redis_client
from worker.ledger import _record as ledger_event

if TYPE_CHECKING:
    from worker.settings import Settings

logger = logging.getLogger("brokerstack.idempotent")

#: Under REDIS_GLOBAL_KEYPREFIX, beside the results: one key per task id.
CLAIM_PREFIX = "brokerstack:effect:"
#: Seconds a claim outlives the task's hard time limit: the time a killed run needs to be seen as
#: gone (the pool's time-limit kill and the worker's bookkeeping), so a live run never loses it.
LEASE_MARGIN_SECONDS = 5.0
#: Shortest and longest wait before a run that found the id claimed looks again: a concurrent
#: duplicate finds the result soon after the other run completes, a redelivery after a crash
#: claims soon after the lease lapses.
MIN_WAIT_SECONDS = 1.0
MAX_WAIT_SECONDS = 5.0
#: How many leases a run waits on another run's claim before it gives up (ClaimWaitExceeded): the
#: holder completes or its lease lapses within one; a third delivery that claimed the id at once
#: after a lapse completes within the next. Longer than that, something keeps taking the id.
CLAIM_WAIT_LEASES = 2
#: Message header carrying when a run first found its id claimed (epoch seconds), so the wait is
#: measured across the messages it republishes and never counts as one of the task's retries.
WAIT_HEADER = "brokerstack_claim_wait_since"


@dataclass
class PendingEffects:
    """The effects a claimed run recorded, written when (and only if) its claim completes."""

    url: str
    task_id: str
    writes: list[Callable[[Any], None]] = field(default_factory=list)


_pending: contextvars.ContextVar[PendingEffects | None] = contextvars.ContextVar("brokerstack_effects", default=None)


def pending_effects() -> PendingEffects | None:
    """The running IdempotentTask's effect collector (None outside one): worker.outbox defers its
    writes into it when it writes to the same Redis as the claim."""
    return _pending.get()


@lru_cache(maxsize=8)
def _client(url: str, settings: Settings) -> redis.Redis:
    return redis_client(url, settings, socket_timeout=5, decode_responses=True)


class ClaimHeld(Exception):
    """Another run holds this task id's claim (running, or died and its lease has not lapsed)."""


class ClaimWaitExceeded(Exception):
    """The task id stayed claimed by other runs for longer than CLAIM_WAIT_LEASES leases: the run
    gives up without running the body (the task fails; the other run's effect, if any, stands)."""


class IdempotentTask(Task):
    """A Celery task whose effect happens once per task id (see the module's docstring).

    ``claim_lease``: seconds a claim is held; default the task's ``time_limit`` (else
    TASK_TIME_LIMIT) plus LEASE_MARGIN_SECONDS. After a worker dies mid-run, the redelivered run
    waits for this before it runs the body again.
    """

    claim_lease: float | None = None

    # --- the claim ----------------------------------------------------------------------------

    @property
    def _settings(self) -> Settings:
        return self.app.brokerstack_settings

    def lease_seconds(self) -> float:
        if self.claim_lease is not None:
            return self.claim_lease
        return float(self.time_limit or self._settings.task_time_limit) + LEASE_MARGIN_SECONDS

    def claim_key(self, task_id: str) -> str:
        return self._settings.redis_global_keyprefix + CLAIM_PREFIX + task_id

    def _redis(self) -> redis.Redis:
        return _client(self._settings.result_backend, self._settings)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if not task_id:  # called as a plain function: no delivery to deduplicate
            return super().__call__(*args, **kwargs)
        token = f"{self.request.hostname or 'local'}:{os.getpid()}:{secrets.token_hex(8)}"
        key = self.claim_key(task_id)
        client = self._redis()
        lease_ms = int(self.lease_seconds() * 1000)
        claimed = {"state": "claimed", "token": token}
        if not client.set(key, json.dumps(claimed), nx=True, px=lease_ms):
            raw = client.get(key)
            if raw is not None and (held := json.loads(raw)).get("state") == "done":
                logger.info("%s[%s]: effect already done, not run again", self.name, task_id)
                return held.get("result")
            raise self._wait_for_claim(client, key, task_id)
        with self._collecting(task_id) as effects:
            try:
                result = super().__call__(*args, **kwargs)
            except BaseException:
                self._release(client, key, token)
                raise
        self._complete(client, key, token, effects, result)
        return result

    def claim_wait_limit(self) -> float:
        """Seconds a run waits on other runs' claims before ClaimWaitExceeded."""
        return CLAIM_WAIT_LEASES * self.lease_seconds()

    def _wait_for_claim(self, client: redis.Redis, key: str, task_id: str) -> BaseException:
        """What to raise when another run holds the claim: a Retry of this very message that keeps
        the task's retry count (the wait is not the body failing), or ClaimWaitExceeded once the
        wait, counted from the first time the id was found claimed, is longer than its bound."""
        request = self.request
        now = time.time()
        since = float(getattr(request, WAIT_HEADER, None) or (request.headers or {}).get(WAIT_HEADER) or now)
        limit = self.claim_wait_limit()
        if now - since > limit:
            return ClaimWaitExceeded(
                f"task {task_id} stayed claimed by other runs for {now - since:.0f} s (limit {limit:.0f} s, "
                f"{CLAIM_WAIT_LEASES} leases); not run"
            )
        wait = min(max(client.pttl(key) / 1000, MIN_WAIT_SECONDS), MAX_WAIT_SECONDS)
        held = ClaimHeld(f"task {task_id} is claimed by another run; looking again in {wait:.0f} s")
        if request.is_eager:  # apply(): Celery runs the retry in place; there is no message to keep
            return self.retry(exc=held, countdown=wait, max_retries=request.retries + 1, throw=False)
        headers = {**(request.headers or {}), WAIT_HEADER: since}
        again = self.signature_from_request(request, countdown=wait, retries=request.retries, headers=headers)
        try:
            again.apply_async()
        except Exception as exc:  # as Task.retry does: the message cannot be kept, so it is let go
            raise Reject(exc, requeue=False) from exc
        return Retry(exc=held, when=wait, sig=again)

    @contextmanager
    def _collecting(self, task_id: str) -> Iterator[PendingEffects]:
        effects = PendingEffects(self._settings.result_backend, task_id)
        reset = _pending.set(effects)
        try:
            yield effects
        finally:
            _pending.reset(reset)

    def _release(self, client: redis.Redis, key: str, token: str) -> None:
        try:
            self._if_owner(client, key, token, lambda pipe: pipe.delete(key))
        except redis.RedisError:
            logger.warning("%s: could not release claim %s; it lapses with its lease", self.name, key)

    def _complete(self, client: redis.Redis, key: str, token: str, effects: PendingEffects, result: Any) -> None:
        done = json.dumps({"state": "done", "result": result}, default=str)
        ttl = self._settings.idempotency_ttl

        def write(pipe: Any) -> None:
            for effect in effects.writes:
                effect(pipe)
            pipe.set(key, done, ex=ttl)

        if self._if_owner(client, key, token, write):
            try:
                ledger_event(self, "effect", effects=len(effects.writes))
            except redis.RedisError:
                # Lab instrumentation: the effect is committed, the task must not fail over its log.
                logger.warning("%s[%s]: effect committed, ledger entry lost", self.name, effects.task_id)
        else:
            # Our lease lapsed (the run outlived it) and another run owns the id: its completion
            # writes the effect; writing ours too would be the duplicate this class exists to stop.
            logger.warning("%s[%s]: claim lost before completion; effect left to its owner", self.name, effects.task_id)

    @staticmethod
    def _if_owner(client: redis.Redis, key: str, token: str, change: Callable[[Any], Any]) -> bool:
        with client.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None or json.loads(raw).get("token") != token:
                    return False
                pipe.multi()
                change(pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                return False
