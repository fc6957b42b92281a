"""/healthz (the process answers) and /readyz (broker and result backend reachable)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.api.dependencies import get_producer, get_settings
from services.api.producer import Producer, ServiceUnavailable
from worker.brokers import profile_for
from worker.settings import Settings

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "broker or result backend unreachable"}})
async def readyz(
    producer: Producer = Depends(get_producer), settings: Settings = Depends(get_settings)
) -> JSONResponse:
    broker, backend = await asyncio.gather(
        _probe(producer.publish(producer.check_broker)), _probe(producer.read(producer.check_result_backend))
    )
    ready = broker["ok"] and backend["ok"]
    body = {
        "status": "ready" if ready else "unavailable",
        "profile": settings.broker_profile,
        **profile_for(settings).health_fields(),
        "broker": broker,
        "result_backend": backend,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _probe(check: Any) -> dict[str, Any]:
    try:
        await check
    except ServiceUnavailable as exc:
        return {"ok": False, "error": exc.detail}
    return {"ok": True}
