"""/metrics: queue depths, dead letters, broker calls (publish outcomes) and the API's own request
rate and latency (services.api.metrics_http), in Prometheus' text format, written by
prometheus_client. Task-level metrics come from the task-events exporter (services.monitoring)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.api.dependencies import get_producer, get_settings
from services.api.producer import Producer, ServiceUnavailable
from worker.inspection import queue_depths
from worker.settings import Settings

router = APIRouter(tags=["health"])


class ScrapeCollector(Collector):
    """What one scrape found: asked of the broker per request, so no state is kept."""

    def __init__(self, profile: str, up: bool, depths: dict[str, int], dead: int | None, calls: dict[str, int]):
        self.profile, self.up, self.depths, self.dead, self.calls = profile, up, depths, dead, calls

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("brokerstack_broker_up", "1 if the broker answered this scrape.", labels=["profile"])
        up.add_metric([self.profile], int(self.up))
        yield up
        depth = GaugeMetricFamily(
            "brokerstack_queue_depth", "Messages ready in a work queue.", labels=["profile", "queue"]
        )
        for queue, count in self.depths.items():
            depth.add_metric([self.profile, queue], count)
        yield depth
        dead = GaugeMetricFamily(
            "brokerstack_dead_letters", "Messages in the dead-letter queue or store.", labels=["profile"]
        )
        if self.dead is not None:
            dead.add_metric([self.profile], self.dead)
        yield dead
        calls = CounterMetricFamily(
            "brokerstack_broker_calls",
            "Calls to the broker from this API process (publishes, revokes, inspections), by outcome.",
            labels=["profile", "outcome"],
        )
        for outcome, count in self.calls.items():
            calls.add_metric([self.profile, outcome], count)
        yield calls


@router.get("/metrics", response_class=Response)
async def metrics(
    request: Request, producer: Producer = Depends(get_producer), settings: Settings = Depends(get_settings)
) -> Response:
    store = request.app.state.dead_letters
    up = True
    depths: dict[str, int] = {}
    dead: int | None = None
    try:
        depths, dead = await asyncio.gather(
            producer.publish(lambda: queue_depths(producer.celery)), producer.publish(store.depth)
        )
    except ServiceUnavailable:
        up = False
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector(settings.broker_profile, up, depths, dead, dict(producer.counts)))
    body = generate_latest(registry)
    http_metrics = getattr(request.app.state, "http_metrics", None)
    if http_metrics is not None:
        body += generate_latest(http_metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
