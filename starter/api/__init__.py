"""Podium's HTTP API, assembled from one router per resource (OpenAPI at /docs):

- `starter.api.cases`: `GET /processes`, `POST /cases/{process}` (one route per registered
  process), `GET /cases/{case_id}`, `POST /documents`;
- `starter.api.approvals`: the decisions (`/cases/{case_id}/approve|reject|request-changes|
  delegate`), `GET /approvals/pending`, `GET /approvals`, `GET /approvals/{case_id}`;
- `starter.api.verification`: `POST /cases/{case_id}/verification-code`, the one-time code an
  employee enters for their password reset (only that employee, signed in as themselves);
- `starter.api.employees`: `POST /employees/{user_name}/termination`, the directory's notice
  that an employee left (their access termination case; their running access requests told);
- `starter.api.messages`: `POST /messages`, the intake: any channel's message triaged once and
  routed (`policies/routing.yaml`) to the case it opens or joins;
- `starter.api.metrics`: `GET /metrics`, the API's Prometheus series (`core.metrics`);
- `starter.api.reports`: `GET /reports` (a page, charts rendered here) and `GET /reports.json`,
  the operations KPIs and the ROI (`core.report`);
- here: `GET /inbox` (the approvers' web page, static, no build step) and `GET /healthz`.

Every route but /healthz, /metrics, /inbox, /static and the docs needs a credential
(`starter.auth`): an API key for services, a bearer JWT for people; 401 without one, 403 without
the permission. The approval roles are those the registered processes' policies name
(`starter.api.roles`), plus the settings' own. The credential is checked before the body is read,
bodies are limited in size and JSON is parsed strictly (`starter.api.guard`). A new case is
`requested_by` the caller. Every error is an RFC 9457 `application/problem+json` body
(`starter.api.problems`); callers never see a stack trace.

`app` is the API's entry (`uvicorn starter.api:app`): at start-up it configures logging for
the process (`core.logging`: JSON lines when `PODIUM_LOG_JSON` asks or stderr is not a terminal,
personal data masked), as every Podium entry point does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath

import structlog
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from temporalio.client import Client

from core.logging import configure_logging
from core.settings import Settings
from core.temporal import connect
from starter.api import (
    approvals,
    carrier,
    cases,
    employees,
    messages,
    metrics,
    reports,
    verification,
)
from starter.api.approvals import DecisionBody, DelegateBody, RejectBody, RequestChangesBody
from starter.api.deps import Podium
from starter.api.guard import ApiLimits, RequestGuard
from starter.api.problems import FieldError, Problem, install
from starter.api.roles import approver_roles
from starter.auth import Authenticator, authenticate
from starter.client import PodiumClient
from workflows.registry import PROCESSES, Registry

__all__ = [
    "DecisionBody",
    "DelegateBody",
    "FieldError",
    "Health",
    "Problem",
    "RejectBody",
    "RequestChangesBody",
    "app",
    "create_app",
]

log = structlog.get_logger()

# The approvers' page: plain HTML, CSS and JS served as they are (no build step).
STATIC_DIR = FilePath(__file__).resolve().parent.parent / "static"
# The page loads only its own files and talks only to this API; nothing inline runs.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

ClientFactory = Callable[[Settings], Awaitable[Client]]


class Health(BaseModel):
    status: str = "ok"
    temporal_reachable: bool


async def _connect_lazily(settings: Settings) -> Client:
    # Lazy: the API starts (and /healthz answers) even while Temporal is still coming up.
    return await connect(settings, role="api", lazy=True)


def create_app(
    settings: Settings | None = None,
    client_factory: ClientFactory | None = None,
    processes: Registry = PROCESSES,
    *,
    max_body_bytes: int | None = None,
    configure_logs: bool = False,
) -> FastAPI:
    """Build the API for `processes`; `client_factory` lets tests hand in their own client.

    `max_body_bytes`: the largest request body (default: `PODIUM_API_MAX_BODY_BYTES`, 16 MiB).
    `configure_logs`: configure the process's logging at start-up, from the settings; the
    entry `app` does, an app built inside another process (tests) leaves its logging alone."""
    factory = client_factory or _connect_lazily
    body_limit = max_body_bytes if max_body_bytes is not None else ApiLimits().max_body_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or Settings()
        if configure_logs:
            configure_logging(resolved.log_level, resolved.log_json)
        temporal = await factory(resolved)
        app.state.podium = PodiumClient(temporal, resolved, processes)
        app.state.settings = resolved  # the report's database and baseline
        # Who may decide: every approval role a registered process's policy names.
        app.state.authenticator = Authenticator(resolved, approver_roles(processes, resolved))
        log.info("api_started", namespace=temporal.namespace, task_queue=resolved.task_queue)
        yield
        app.state.podium.close()
        log.info("api_stopped")

    app = FastAPI(
        title="Podium",
        summary="Durable AI-orchestrated cases on Temporal: open, inspect and decide them.",
        version="0.2.0",
        lifespan=lifespan,
        # Default deny: a route is protected unless its path is in auth.PUBLIC_PATHS.
        dependencies=[Depends(authenticate)],
    )
    # Inside the problem middleware that `install` adds: a crash in the guard is a 500 problem.
    app.add_middleware(RequestGuard, max_body_bytes=body_limit)
    install(app)
    # Outermost: every answer is counted, the guard's refusals and crash problems too.
    app.add_middleware(metrics.HttpMetrics)
    app.include_router(cases.router(processes))
    app.include_router(approvals.router())
    app.include_router(verification.router())
    app.include_router(employees.router())
    app.include_router(carrier.router())
    app.include_router(messages.router())
    app.include_router(metrics.router())
    app.include_router(reports.router())

    @app.get("/inbox", include_in_schema=False)
    async def inbox_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "inbox.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(podium: Podium) -> Health:
        return Health(temporal_reachable=await podium.ping())

    return app


app = create_app(configure_logs=True)
