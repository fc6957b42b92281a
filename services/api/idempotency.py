"""``Idempotency-Key`` on the endpoints that start work (IETF httpapi draft, "The Idempotency-Key
HTTP Header Field"): a client that did not hear the answer (a 503, a timeout, a dropped
connection) retries with the same key and gets the first answer, never a second task.

How one keyed request goes (docs/idempotency.md):

1. The body is checked first (a 422 never holds a key).
2. The key is **claimed** in the result backend's Redis: ``SET NX`` of an in-flight record holding
   the body's fingerprint and a random owner token, with a short lease. Another request with the
   key now sees the record: a different fingerprint is 422, an in-flight one 409, a done one gets
   the stored answer.
3. The task ids are **derived** from the key and the fingerprint (uuid5), so a retry of a publish
   whose answer was lost sends the very same message ids; a worker's ``IdempotentTask`` claim then
   lets its effect happen once.
4. On success the record becomes the stored answer for IDEMPOTENCY_TTL; on failure (503) it is
   released, so the retry publishes again under the same ids.

The records live in the result backend's Redis (where the published-id records and the results
already are): they survive an API restart and every API process sees them. With another result
backend (the fast tier's in-memory one) a per-process store stands in.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import redis
from celery.backends.redis import RedisBackend
from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from services.api.producer import Producer
from worker.backends import redis_client
from worker.settings import Settings

#: The header's name, as the IETF draft spells it.
HEADER = "Idempotency-Key"
#: Longest key accepted; the draft leaves it to the server, and 255 fits any UUID or ULID with room.
MAX_KEY_LENGTH = 255
#: Printable ASCII only: a header value is bytes, and a key must compare the same in every client.
KEY_PATTERN = r"^[\x20-\x7e]+$"
#: Under REDIS_GLOBAL_KEYPREFIX; the client's key is hashed so any 255 characters make one short key.
REDIS_KEY_PREFIX = "brokerstack:idempotency:"
#: Fixed namespace of the derived task ids (uuid5): the same key and body give the same ids in
#: every API process and after every restart.
TASK_ID_NAMESPACE = uuid.UUID("6f1d7a0e-3c52-5b8e-9a4d-2b7c0e9f1a35")
#: Seconds beyond PUBLISH_TIMEOUT an in-flight claim is held: a request is answered within about
#: two PUBLISH_TIMEOUTs (publish and record side by side, then the answer), so a claim older than
#: that belongs to an API process that died mid-request and a retry may take it over.
LEASE_MARGIN_SECONDS = 5.0

M = TypeVar("M", bound=BaseModel)


class IdempotencyStore(Protocol):
    def claim(self, key: str, record: dict[str, Any], lease: float) -> dict[str, Any] | None:
        """Store ``record`` under ``key`` unless something is there; return what is there (None if
        the claim was taken)."""

    def complete(self, key: str, token: str, record: dict[str, Any], ttl: int) -> None:
        """Replace the in-flight record owned by ``token`` with ``record`` for ``ttl`` seconds."""

    def release(self, key: str, token: str) -> None:
        """Drop the in-flight record owned by ``token`` (nothing if another owner took it over)."""


class RedisIdempotencyStore:
    """Records in the result backend's Redis (brokerstack's own client for RESULT_BACKEND_URL:
    TLS, Sentinel and the key prefix as everywhere else)."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.redis_global_keyprefix + REDIS_KEY_PREFIX
        self.client = redis_client(
            settings.result_backend, settings, socket_timeout=settings.publish_timeout, decode_responses=True
        )

    def _key(self, key: str) -> str:
        return self.prefix + hashlib.sha256(key.encode()).hexdigest()

    def claim(self, key: str, record: dict[str, Any], lease: float) -> dict[str, Any] | None:
        name = self._key(key)
        if self.client.set(name, json.dumps(record), nx=True, px=int(lease * 1000)):
            return None
        raw = self.client.get(name)
        if raw is None:  # expired between the two calls: try once more, atomically again
            if self.client.set(name, json.dumps(record), nx=True, px=int(lease * 1000)):
                return None
            raw = self.client.get(name)
        return json.loads(raw) if raw is not None else {"state": "in_flight", "fingerprint": record["fingerprint"]}

    def _if_owner(self, key: str, token: str, change: Any) -> None:
        name = self._key(key)
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(name)
                raw = pipe.get(name)
                if raw is None or json.loads(raw).get("token") != token:
                    return  # the lease ran out and another request owns the key now
                pipe.multi()
                change(pipe, name)
                pipe.execute()
            except redis.WatchError:
                return  # taken over while we looked: that request answers for the key

    def complete(self, key: str, token: str, record: dict[str, Any], ttl: int) -> None:
        self._if_owner(key, token, lambda pipe, name: pipe.set(name, json.dumps(record), ex=ttl))

    def release(self, key: str, token: str) -> None:
        self._if_owner(key, token, lambda pipe, name: pipe.delete(name))


class MemoryIdempotencyStore:
    """The same records in this process only: for a result backend that is not Redis (the fast
    tier's in-memory one), where there is no shared store to put them in."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def _current(self, key: str) -> dict[str, Any] | None:
        found = self._records.get(key)
        if found is None or found[0] <= time.monotonic():
            self._records.pop(key, None)
            return None
        return found[1]

    def claim(self, key: str, record: dict[str, Any], lease: float) -> dict[str, Any] | None:
        with self._lock:
            if (current := self._current(key)) is not None:
                return current
            self._records[key] = (time.monotonic() + lease, record)
            return None

    def complete(self, key: str, token: str, record: dict[str, Any], ttl: int) -> None:
        with self._lock:
            if (current := self._current(key)) is not None and current.get("token") == token:
                self._records[key] = (time.monotonic() + ttl, record)

    def release(self, key: str, token: str) -> None:
        with self._lock:
            if (current := self._current(key)) is not None and current.get("token") == token:
                del self._records[key]


def store_for(settings: Settings, producer: Producer) -> IdempotencyStore:
    if isinstance(producer.celery.backend, RedisBackend):
        return RedisIdempotencyStore(settings)
    return MemoryIdempotencyStore()


def fingerprint(route: str, body: Any) -> str:
    """What "the same request" means: the route and the body as parsed (so key order and spacing
    in the JSON do not matter, values do)."""
    canonical = json.dumps({"route": route, "body": body}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class Claim:
    """One request's hold on its key: either the stored first answer (``replay``) or the right to
    publish under ``task_id(i)`` and then ``complete`` or ``release``."""

    store: IdempotencyStore | None
    producer: Producer | None
    key: str | None
    fingerprint: str
    token: str
    ttl: int
    replay: dict[str, Any] | None = None

    def task_id(self, index: int = 0) -> str:
        """The ``index``-th task id of this request: derived from the key and body, random without a key."""
        if self.key is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{self.key}\n{self.fingerprint}\n{index}"))

    async def complete(self, answer: dict[str, Any]) -> None:
        """Keep ``answer`` (the JSON body) as the key's answer. A failure here is logged, not
        raised: the work is published, and an error would make the client retry it."""
        if self.store is None or self.producer is None or self.key is None:
            return
        store, key = self.store, self.key
        record = {"state": "done", "fingerprint": self.fingerprint, "answer": answer}
        try:
            await self.producer.read(lambda: store.complete(key, self.token, record, self.ttl))
        except Exception:  # noqa: BLE001 - the lease expires by itself; the retry re-derives the same ids
            return

    async def release(self) -> None:
        if self.store is None or self.producer is None or self.key is None:
            return
        store, key = self.store, self.key
        try:
            await self.producer.read(lambda: store.release(key, self.token))
        except Exception:  # noqa: BLE001 - the lease expires by itself
            return


async def claim(
    key: str | None, route: str, body: Any, *, store: IdempotencyStore, producer: Producer, settings: Settings
) -> Claim:
    """Take ``key`` for this request, or raise 409 (in flight) / 422 (another body), or hand back
    the stored answer in ``Claim.replay``. Without a key: a claim that derives nothing and stores
    nothing (random ids, as before). Raises ResultBackendUnavailable (503) when the store is down:
    a keyed request cannot be answered safely without it."""
    print_ = fingerprint(route, body)
    token = secrets.token_hex(16)
    ttl = settings.idempotency_ttl
    if key is None:
        return Claim(None, None, None, print_, token, ttl)
    record = {"state": "in_flight", "fingerprint": print_, "token": token}
    lease = 2 * settings.publish_timeout + LEASE_MARGIN_SECONDS
    existing = await producer.read(lambda: store.claim(key, record, lease))
    if existing is None:
        return Claim(store, producer, key, print_, token, ttl)
    if existing.get("fingerprint") != print_:
        raise RequestValidationError(
            [
                {
                    "loc": ("header", HEADER),
                    "msg": f"{HEADER} {key!r} was used for a different request; use a new key for a new request",
                    "type": "idempotency_key_reused",
                }
            ]
        )
    if existing.get("state") != "done":
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"a request with {HEADER} {key!r} is still being processed; retry after it is answered",
            headers={"Retry-After": str(int(lease))},
        )
    return Claim(None, None, key, print_, token, ttl, replay=existing["answer"])


async def answer_once(held: Claim, model: type[M], start: Callable[[], Awaitable[M]]) -> M:
    """The stored first answer if ``held`` replays one; else ``start()``'s answer, kept under the
    key (or the key released if ``start`` fails, so a retry publishes again under the same ids)."""
    if held.replay is not None:
        return model.model_validate(held.replay)
    try:
        accepted = await start()
    except BaseException:
        await held.release()
        raise
    await held.complete(accepted.model_dump(mode="json"))
    return accepted


@dataclass
class Idempotency:
    """A request's Idempotency-Key with what it needs to be claimed (a route dependency)."""

    key: str | None
    store: IdempotencyStore | None
    producer: Producer
    settings: Settings

    async def claim(self, route: str, body: Any) -> Claim:
        return await claim(
            self.key,
            route,
            body,
            store=self.store or MemoryIdempotencyStore(),
            producer=self.producer,
            settings=self.settings,
        )
