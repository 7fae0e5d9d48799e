"""`GET /metrics`: the API's Prometheus series (`core.metrics`), and the HTTP request counter.

Public, like /healthz: scrapers carry no credential, and nothing in it is personal (every label
value is a route template, a process, channel, action or route name; see `core.metrics.label`).
Left out of the OpenAPI document: it is for Prometheus, not for the API's callers.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import metrics

__all__ = ["METRICS_PATH", "HttpMetrics", "router"]

METRICS_PATH = "/metrics"
UNROUTED = "unrouted"


def router() -> APIRouter:
    api = APIRouter()

    @api.get(METRICS_PATH, include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return api


def _route(scope: Scope) -> str:
    """The template of the route that answered (`/cases/{case_id}`), never the path itself: a
    path holds case ids and user names. `unrouted`: answered before routing (the guard's 401s,
    413s) or by no route (404)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNROUTED


class HttpMetrics:
    """Counts every answered request (`podium_http_requests_total`), refusals included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            metrics.HTTP_REQUESTS.labels(
                method=metrics.label(str(scope.get("method", "")).lower()),
                route=_route(scope),
                status=metrics.status_class(status),
            ).inc()
