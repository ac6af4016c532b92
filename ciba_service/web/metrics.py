"""``GET /metrics`` in the Prometheus text format: requests by endpoint and outcome, their
latency, pending requests, decisions, deliveries and their retries, store errors.

Counting is a dictionary lookup and an addition per request (prometheus-client's counters are
lock-free per sample); the pending-requests gauge is read from the store only when Prometheus
scrapes, never on the request path. Each app has its own registry, so several apps in one
process (tests, the demo) do not share counters. The endpoint label is the route template
(``/approve/{approval_id}``), never the path: approval ids and enrollment tokens must not end
up in a metrics database, and their number would be unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _Pending(Collector):
    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("ciba_pending_requests", "Backchannel requests waiting for the user's decision")
        try:
            gauge.add_metric([], float(self._count()))
        except Exception:  # the store is down: the scrape still answers, without the gauge's value
            return
        yield gauge


class Metrics:
    def __init__(self, *, count_pending: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ciba_http_requests",
            "HTTP requests by endpoint and outcome (the OAuth error code, or the status code)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ciba_http_request_duration_seconds",
            "Time to answer, by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.decisions = Counter("ciba_decisions", "Users' decisions", ["outcome"], registry=self.registry)
        self.deliveries = Counter(
            "ciba_deliveries", "Ping/push deliveries by mode and result", ["mode", "result"], registry=self.registry
        )
        self.delivery_retries = Counter(
            "ciba_delivery_retries", "Ping/push attempts beyond the first", ["mode"], registry=self.registry
        )
        self.store_errors = Counter(
            "ciba_store_unavailable", "Requests answered 503 because the store failed", registry=self.registry
        )
        self.registry.register(_Pending(count_pending))

    # ciba_service.server.events.Events -------------------------------------------------------
    def decision(self, outcome: str) -> None:
        self.decisions.labels(outcome).inc()

    def delivery(self, mode: str, *, delivered: bool, attempts: int) -> None:
        self.deliveries.labels(mode, "delivered" if delivered else "failed").inc()
        if attempts > 1:
            self.delivery_retries.labels(mode).inc(attempts - 1)

    def render(self, _: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI (no per-request task or body copy): times the call and counts its outcome."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            endpoint = str(getattr(route, "path", "unmatched"))
            state = scope.get("state") or {}
            outcome = str(state.get("oauth_error") or status)
            self.metrics.requests.labels(endpoint, outcome).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
