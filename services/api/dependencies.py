"""Request-scoped pieces the routes share: the producer, the catalog, the API-key guard."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader

from services.api.catalog import TaskCatalog
from services.api.producer import Producer
from worker.settings import Settings

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when API_KEY is set")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_producer(request: Request) -> Producer:
    return request.app.state.producer


def get_catalog(request: Request) -> TaskCatalog:
    return request.app.state.catalog


def require_api_key(settings: Settings = Depends(get_settings), given: str | None = Depends(_api_key_header)) -> None:
    """Guards every mutating endpoint once API_KEY is set."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if given is None or not hmac.compare_digest(given.encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong X-API-Key header",
            headers={"WWW-Authenticate": "X-API-Key"},
        )
