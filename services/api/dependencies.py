"""Request-scoped pieces the routes share: the producer, the catalog, the published-id record, and
the key guards.

Two keys, both sent as ``X-API-Key``:

- ``API_KEY`` (full access): enqueue, revoke, start workflows, sign up, and read everything.
- ``API_READ_KEY`` (optional, read-only, for dashboards): the GET endpoints that return task data
  (``/tasks/{id}``, ``/workflows/{id}``, ``/dlq``, ``/dlq/{id}``); refused with 403 on anything
  that changes state.

With neither set (development) everything is open except dead-letter replay and purge, which
always need API_KEY. ``/healthz``, ``/readyz``, ``/metrics``, ``/tasks`` (the catalog) and the
docs stay open: they carry no task data (no ids, arguments, results or tracebacks).
"""

from __future__ import annotations

import hmac
import threading
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from services.api.catalog import TaskCatalog
from services.api.idempotency import HEADER, KEY_PATTERN, MAX_KEY_LENGTH, Idempotency, IdempotencyStore, store_for
from services.api.producer import Producer
from services.api.published import PublishedTasks
from worker.settings import Settings

_api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="API_KEY for everything; API_READ_KEY (read-only) for the GET endpoints that return task data",
)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_producer(request: Request) -> Producer:
    return request.app.state.producer


def get_catalog(request: Request) -> TaskCatalog:
    return request.app.state.catalog


def get_published(request: Request) -> PublishedTasks:
    return request.app.state.published


_idempotency_lock = threading.Lock()


def get_idempotency_store(request: Request) -> IdempotencyStore:
    """The Idempotency-Key store, made on first use (a request without a key never needs it)."""
    state = request.app.state
    with _idempotency_lock:
        if getattr(state, "idempotency", None) is None:
            state.idempotency = store_for(state.settings, state.producer)
        return state.idempotency


def _idempotency_key(
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=KEY_PATTERN,
            description="Retry with the same key to get the first answer instead of a second task "
            f"(1-{MAX_KEY_LENGTH} printable ASCII characters; kept IDEMPOTENCY_TTL seconds)",
        ),
    ] = None,
) -> str | None:
    return key


def get_idempotency(request: Request, key: str | None = Depends(_idempotency_key)) -> Idempotency:
    """The request's Idempotency-Key (validated: 422 naming the header) and its store."""
    store = get_idempotency_store(request) if key is not None else None
    return Idempotency(key, store, get_producer(request), get_settings(request))


def _secret(value: Any) -> bytes | None:
    if value is None:
        return None
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    return raw.encode() or None


def _keys(settings: Settings) -> tuple[bytes | None, bytes | None]:
    """(API_KEY, API_READ_KEY) as bytes; None where unset. ``api_read_key`` is read defensively
    so the API runs on a Settings that predates the field."""
    return _secret(settings.api_key), _secret(settings.api_read_key)


def _same(given: str | None, expected: bytes | None) -> bool:
    # Both comparisons always run in the callers: which key matched must not show in the timing.
    return given is not None and expected is not None and hmac.compare_digest(given.encode(), expected)


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail="missing or wrong X-API-Key header",
        headers={"WWW-Authenticate": "X-API-Key"},
    )


def _read_only() -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail="API_READ_KEY is read-only: this endpoint needs API_KEY")


def require_api_key(settings: Settings = Depends(get_settings), given: str | None = Depends(_api_key_header)) -> None:
    """Guards every mutating endpoint once API_KEY is set; the read-only key gets 403."""
    full, read = _keys(settings)
    if full is None:
        return
    is_full, is_read = _same(given, full), _same(given, read)
    if is_full:
        return
    raise _read_only() if is_read else _unauthorized()


def require_read_key(settings: Settings = Depends(get_settings), given: str | None = Depends(_api_key_header)) -> None:
    """Guards every endpoint that returns task data (ids, arguments, results, tracebacks) once
    either key is set: they are as sensitive as the calls that made them."""
    full, read = _keys(settings)
    if full is None and read is None:
        return
    is_full, is_read = _same(given, full), _same(given, read)
    if not (is_full or is_read):
        raise _unauthorized()


def require_operator(settings: Settings = Depends(get_settings), given: str | None = Depends(_api_key_header)) -> None:
    """Replay and purge act on other people's failed work: they need API_KEY configured *and*
    sent, even where the rest of the API is open."""
    full, read = _keys(settings)
    if full is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="set API_KEY to enable dead-letter replay and purge")
    is_full, is_read = _same(given, full), _same(given, read)
    if is_full:
        return
    raise _read_only() if is_read else _unauthorized()
