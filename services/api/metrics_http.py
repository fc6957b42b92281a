"""Request rate and latency of the API by route and status, for /metrics.

The route label is the path template (``/tasks/{name}``), never the raw path: task ids and
names in URLs would make a new series per request. Requests that match no route share one label.
"""

from __future__ import annotations

import re
import time
from functools import cached_property

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds): a publish answers in milliseconds, PUBLISH_TIMEOUT is at most 30 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: The route label of a request no route matched (404s for unknown paths, scanners).
UNMATCHED = "unmatched"


class HttpMetrics:
    """The API's request counters: one registry per app (the fast tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["method", "route", "status"]
        self.requests = Counter(
            "brokerstack_http_requests", "HTTP requests answered, by route and status.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "brokerstack_http_request_duration_seconds",
            "Seconds from request to the end of the response, by route and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = {"method": method, "route": route, "status": str(status)}
        self.requests.labels(**labels).inc()
        self.latency.labels(**labels).observe(seconds)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, metrics: HttpMetrics) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.metrics = metrics

    @cached_property
    def _templates(self) -> list[tuple[re.Pattern[str], str]]:
        """The API's path templates (from its OpenAPI document: FastAPI's public view of its
        routes) as patterns, for requests answered before routing."""
        patterns = []
        for template in self.fastapi_app.openapi().get("paths", {}):
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            patterns.append((re.compile(f"^{regex}$"), template))
        return patterns

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return str(route.path)
        # Answered before routing (a body over the size limit): the template of its path.
        path = scope.get("path", "")
        return next((template for pattern, template in self._templates if pattern.match(path)), UNMATCHED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.observe(scope["method"], self._route(scope), status, time.perf_counter() - started)


def install_http_metrics(app: FastAPI) -> None:
    """Count every request (outermost middleware: rejections by the others count too)."""
    app.state.http_metrics = HttpMetrics()
    app.add_middleware(HttpMetricsMiddleware, fastapi_app=app, metrics=app.state.http_metrics)
