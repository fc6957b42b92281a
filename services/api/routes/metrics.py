"""/metrics: queue depths, dead letters and publish outcomes in Prometheus' text format."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from services.api.dependencies import get_producer, get_settings
from services.api.producer import Producer, ServiceUnavailable
from worker.inspection import queue_depths
from worker.settings import Settings

router = APIRouter(tags=["health"])


def _gauge(name: str, help_text: str, samples: list[tuple[dict[str, str], float]], kind: str = "gauge") -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        rendered = ",".join(f'{key}="{val}"' for key, val in labels.items())
        lines.append(f"{name}{{{rendered}}} {value:g}")
    return "\n".join(lines)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(
    request: Request, producer: Producer = Depends(get_producer), settings: Settings = Depends(get_settings)
) -> PlainTextResponse:
    profile: dict[str, str] = {"profile": settings.broker_profile}
    store = request.app.state.dead_letters
    up = 1
    try:
        depths, dead = await asyncio.gather(
            producer.publish(lambda: queue_depths(producer.celery)), producer.publish(store.depth)
        )
    except ServiceUnavailable:
        up, depths, dead = 0, {}, None
    blocks = [
        _gauge("brokerstack_broker_up", "1 if the broker answered this scrape.", [(profile, up)]),
        _gauge(
            "brokerstack_queue_depth",
            "Messages ready in a work queue.",
            [({**profile, "queue": queue}, depth) for queue, depth in depths.items()],
        ),
        _gauge(
            "brokerstack_dead_letters",
            "Messages in the dead-letter queue or store.",
            [(profile, dead)] if dead is not None else [],
        ),
        _gauge(
            "brokerstack_broker_calls_total",
            "Calls to the broker from this API process (publishes, revokes, inspections), by outcome.",
            [({**profile, "outcome": outcome}, count) for outcome, count in producer.counts.items()],
            kind="counter",
        ),
    ]
    return PlainTextResponse("\n".join(blocks) + "\n", media_type="text/plain; version=0.0.4")
