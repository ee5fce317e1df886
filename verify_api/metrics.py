"""Prometheus metrics: requests, latency, verdicts, rate limiting, chain state, database and Redis outages.

With several workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``cardproof serve --workers N`` does) so
/metrics adds up every worker's counters.
"""

from __future__ import annotations

import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

__all__ = ["LATENCY", "RATE_LIMITED", "REQUESTS", "VERDICTS", "MetricsMiddleware", "render"]

REQUESTS = Counter("cardproof_api_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("cardproof_api_request_seconds", "Request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
VERDICTS = Counter("cardproof_api_verdicts_total", "Verdicts given", ["verdict"])
RATE_LIMITED = Counter("cardproof_api_rate_limited_total", "Requests refused by a rate limit", ["scope"])
SCANS_DROPPED = Counter("cardproof_api_scans_dropped_total", "Scans not recorded (queue full)")
LOOKUPS = Counter("cardproof_api_lookups_total", "Card lookups by path: fast (all cached) or slow (read)",
                  ["path"])
_children: dict[tuple, object] = {}


def child(metric, *labels: str):
    """``metric.labels(*labels)``, memoised (labels() costs more than the increment)."""
    key = (id(metric), labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


class _ChainCollector:
    def __init__(self, deps: Any) -> None:
        self.deps = deps

    def collect(self):
        st = self.deps.chain.status()
        g = GaugeMetricFamily("cardproof_api_chain_state", "1 for the chain view's current state", labels=["state"])
        for state in ("live", "stale", "unavailable"):
            g.add_metric([state], 1.0 if st.state == state else 0.0)
        yield g
        yield GaugeMetricFamily("cardproof_api_chain_last_block", "Last block seen", value=float(st.last_block or 0))
        yield GaugeMetricFamily("cardproof_api_chain_reads", "Chain reads made by this worker",
                                value=float(self.deps.chain.reads))
        yield GaugeMetricFamily("cardproof_api_scans_written", "Scans written by this worker",
                                value=float(self.deps.scans.written))
        from verify_api.errors import database_outage, engine_of

        yield GaugeMetricFamily("cardproof_api_database_available",
                                "1 while the database answers, 0 during an outage (answered 503 database_unavailable)",
                                value=1.0 if database_outage(engine_of(self.deps)).available else 0.0)
        limiter = self.deps.limiter
        if getattr(limiter, "backend", None) == "redis":
            yield GaugeMetricFamily("cardproof_api_redis_available",
                                    "1 while Redis answers, 0 during an outage (rate limits per worker meanwhile)",
                                    value=1.0 if limiter.available else 0.0)


def render(deps: Any) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY  # type: ignore[assignment]
        return generate_latest(registry) + generate_latest(_single(deps)), CONTENT_TYPE_LATEST
    registry.register(_ChainCollector(deps))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _single(deps: Any) -> CollectorRegistry:
    r = CollectorRegistry()
    r.register(_ChainCollector(deps))
    return r


class MetricsMiddleware:
    """Pure ASGI middleware counting requests by route template (cheap: no BaseHTTPMiddleware)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            child(REQUESTS, path, scope["method"], str(status["code"])).inc()
            child(LATENCY, path).observe(time.perf_counter() - start)
