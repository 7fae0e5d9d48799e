"""Podium's HTTP API: open refund cases, read them, decide approvals, list what waits for people.

Routes (OpenAPI at /docs):

    POST /cases/refund               open a case (header Idempotency-Key makes retries safe);
                                     an optional receipt image (`attachment`) is stored first
    POST /documents                  store a receipt image; cases refer to it by `attachment_id`
    GET  /cases/{case_id}            the case as the workflow sees it
    POST /cases/{case_id}/approve          approve the pending refund (at the current level)
    POST /cases/{case_id}/reject           reject it (a reason is required)
    POST /cases/{case_id}/request-changes  approve a lower amount
    POST /cases/{case_id}/delegate         let a named person decide at the current level
    GET  /approvals/pending                cases waiting for a person, most urgent SLA first
                                           (`role=finance`: what that role may decide now)
    GET  /approvals                        an approver's inbox (`role=`, `approver=` for what
                                           was delegated to them, `process=`), with time left
    GET  /approvals/{case_id}              one approval: request, AI recommendation, decisions
    GET  /inbox                            the approvers' web page (static, no build step)
    GET  /healthz                    liveness, and whether Temporal answers

Every route but /healthz, /inbox, /static and the docs needs a credential (`starter.auth`): an
API key for services, a bearer JWT for people; 401 without one, 403 without the permission.
Who decides and in which roles come from the credential, never from the body: a body `approver`
other than the caller is refused (403), body `roles` may only narrow the caller's approval roles.
The case refuses a caller without a role of the level deciding now (403), unless the decision
was delegated to them. `decision_id` (optional) makes a retry return the first result instead of
deciding twice. A new case is `requested_by` the caller.

Every error is an RFC 9457 `application/problem+json` body; callers never see a stack trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from http import HTTPStatus
from pathlib import Path as FilePath
from typing import Annotated, Any

import structlog
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from core.settings import Settings
from core.temporal import connect
from starter.auth import (
    CASE_READ,
    CASE_START,
    Authenticator,
    Principal,
    authenticate,
    forbidden,
    require,
)
from starter.client import (
    IDEMPOTENCY_KEY_PATTERN,
    INBOX_LIMIT_MAX,
    PROCESS_PATTERN,
    ROLE_PATTERN,
    ApprovalNotFound,
    ApprovalView,
    CaseClosed,
    CaseNotFound,
    CaseRef,
    CaseView,
    DecisionRefused,
    IdempotencyConflict,
    Inbox,
    InvalidRequest,
    PendingApproval,
    PodiumClient,
    PodiumError,
    RefundRequest,
    TemporalUnavailable,
)
from starter.documents import AttachmentUpload, DocumentRef
from workflows.types import ApprovalAction, ApprovalDecisionResult

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

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:podium:problem:"
# The approvers' page: plain HTML, CSS and JS served as they are (no build step).
STATIC_DIR = FilePath(__file__).parent / "static"
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


# --- bodies -------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field inside its location")
    location: str = Field(description="body, query, header or path")
    message: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


_Person = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
_Role = Annotated[str, StringConstraints(strip_whitespace=True, pattern=ROLE_PATTERN)]
_Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


class DecisionBody(BaseModel):
    approver: _Person | None = Field(
        default=None, description="Optional: must be the caller (the credential's subject)"
    )
    roles: list[_Role] | None = Field(
        default=None,
        max_length=20,
        description="Optional: only these of the caller's approval roles (default: all of them)",
        examples=[["team_lead"]],
    )
    comment: str | None = Field(default=None, max_length=2_000)
    request_id: str | None = Field(
        default=None, min_length=1, description="Defaults to the approval pending right now"
    )
    decision_id: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retry-safe key: the same id returns the first result (default: new)",
    )


class RejectBody(DecisionBody):
    reason: _Reason = Field(description="Why the refund is rejected; the customer is told")


class RequestChangesBody(DecisionBody):
    amount: Decimal = Field(
        gt=0, max_digits=12, decimal_places=2, description="The lower amount to refund, dollars"
    )
    reason: _Reason | None = None


class DelegateBody(DecisionBody):
    to: _Person = Field(description="Who decides instead, at the current level")
    reason: _Reason


class Health(BaseModel):
    status: str = "ok"
    temporal_reachable: bool


# --- problems -----------------------------------------------------------------------------------

# Podium's errors and the HTTP answer each one gets: status, problem type, title.
_PROBLEMS: dict[type[PodiumError], tuple[int, str, str]] = {
    CaseNotFound: (404, "case-not-found", "Case not found"),
    ApprovalNotFound: (404, "approval-not-found", "Approval not found"),
    CaseClosed: (409, "case-closed", "Case closed"),
    IdempotencyConflict: (409, "idempotency-conflict", "Idempotency key reused"),
    DecisionRefused: (409, "decision-refused", "Decision refused"),
    InvalidRequest: (422, "invalid-request", "Invalid request"),
    TemporalUnavailable: (503, "temporal-unavailable", "Temporal unavailable"),
}

# Refusals by starter.auth: no or a bad credential, or one without the permission.
_AUTH_PROBLEMS = {401: "unauthorized", 403: "forbidden"}

_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}
    for status in (401, 403, 404, 409, 422, 503)
}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=type_, title=title, status=status, detail=detail, instance=instance, errors=errors
    )
    return JSONResponse(
        problem.model_dump(mode="json", exclude_none=True),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _field_errors(errors: Any) -> list[FieldError]:
    result = []
    for error in errors:
        location, *path = error.get("loc") or ("body",)
        result.append(
            FieldError(
                field=".".join(str(part) for part in path) or str(location),
                location=str(location),
                message=str(error.get("msg", "invalid")),
                type=str(error.get("type", "value_error")),
            )
        )
    return result


class _ProblemOnCrash:
    """Turn an unexpected exception into a generic 500 problem, and log it with its traceback."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except Exception:
            log.exception("api_unhandled_error", method=scope.get("method"), path=scope.get("path"))
            if started:
                raise
            response = problem_response(
                500,
                "Internal error",
                "Podium could not handle this request; the error has been logged.",
                instance=scope.get("path"),
            )
            await response(scope, receive, send)


def _install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(PodiumError)
    async def _podium_error(request: Request, exc: PodiumError) -> JSONResponse:
        status, slug, title = next(
            (problem for cls, problem in _PROBLEMS.items() if isinstance(exc, cls)),
            (500, "internal", "Internal error"),
        )
        errors = None
        if isinstance(exc, InvalidRequest) and exc.field:
            errors = [
                FieldError(
                    field=exc.field, location=exc.location, message=exc.message, type="value_error"
                )
            ]
        headers = {"Retry-After": "5"} if status == 503 else None
        log.info("api_request_refused", path=request.url.path, status=status, problem=slug)
        return problem_response(
            status,
            title,
            exc.message,
            type_=PROBLEM_TYPE_PREFIX + slug,
            instance=request.url.path,
            errors=errors,
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc.errors())
        return problem_response(
            422,
            "Invalid request",
            "; ".join(f"{e.location} {e.field}: {e.message}" for e in errors),
            type_=PROBLEM_TYPE_PREFIX + "validation",
            instance=request.url.path,
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
        slug = _AUTH_PROBLEMS.get(exc.status_code)
        if slug is not None:
            log.info(
                "api_request_refused", path=request.url.path, status=exc.status_code, problem=slug
            )
        return problem_response(
            exc.status_code,
            title,
            detail,
            type_=PROBLEM_TYPE_PREFIX + slug if slug else "about:blank",
            instance=request.url.path,
            headers=dict(exc.headers) if exc.headers else None,
        )


# --- the app ------------------------------------------------------------------------------------


async def _connect_lazily(settings: Settings) -> Client:
    # Lazy: the API starts (and /healthz answers) even while Temporal is still coming up.
    return await connect(settings, lazy=True)


def _podium(request: Request) -> PodiumClient:
    podium = request.app.state.podium
    assert isinstance(podium, PodiumClient)
    return podium


Podium = Annotated[PodiumClient, Depends(_podium)]
Starter = Annotated[Principal, Depends(require(CASE_START))]
Reader = Annotated[Principal, Depends(require(CASE_READ))]
Caller = Annotated[Principal, Depends(require())]
CaseId = Annotated[str, Path(min_length=1, max_length=200)]


def create_app(
    settings: Settings | None = None, client_factory: ClientFactory | None = None
) -> FastAPI:
    """Build the API; `client_factory` lets tests hand in their own Temporal client."""
    factory = client_factory or _connect_lazily

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or Settings()
        temporal = await factory(resolved)
        app.state.podium = PodiumClient(temporal, resolved)
        app.state.authenticator = Authenticator(resolved)
        log.info("api_started", namespace=temporal.namespace, task_queue=resolved.task_queue)
        yield
        app.state.podium.close()
        log.info("api_stopped")

    app = FastAPI(
        title="Podium",
        summary="Durable refund cases on Temporal: open, inspect and decide them.",
        version="0.1.0",
        lifespan=lifespan,
        # Default deny: a route is protected unless its path is in auth.PUBLIC_PATHS.
        dependencies=[Depends(authenticate)],
    )
    app.add_middleware(_ProblemOnCrash)
    _install_problem_handlers(app)

    @app.post(
        "/cases/refund",
        status_code=201,
        response_model=CaseRef,
        responses={
            200: {"model": CaseRef, "description": "The case already exists"},
            **_PROBLEM_RESPONSES,
        },
        tags=["cases"],
    )
    async def create_refund_case(
        body: RefundRequest,
        podium: Podium,
        caller: Starter,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="Retry-safe key: the same key and body return the same case",
            ),
        ] = None,
    ) -> CaseRef:
        """Open a refund case; Podium adds the refund policy from its settings."""
        if body.requested_by is not None and body.requested_by != caller.subject:
            raise forbidden("requested_by must be the caller; it is taken from the credential")
        body = body.model_copy(update={"requested_by": caller.subject})
        ref = await podium.create_refund_case(body, idempotency_key)
        response.headers["Location"] = f"/cases/{ref.case_id}"
        if not ref.created:
            response.status_code = 200
        return ref

    @app.post(
        "/documents",
        status_code=201,
        response_model=DocumentRef,
        responses={
            200: {"model": DocumentRef, "description": "The same bytes were stored before"},
            **_PROBLEM_RESPONSES,
        },
        tags=["cases"],
    )
    async def upload_document(
        body: AttachmentUpload, podium: Podium, _: Starter, response: Response
    ) -> DocumentRef:
        """Store a receipt image (PNG or JPEG by its bytes, up to 10 MB, base64 in JSON); open
        a case with its `document_id` as `attachment_id`."""
        document = await podium.upload_document(body)
        if not document.created:
            response.status_code = 200
        return document

    @app.get(
        "/cases/{case_id}", response_model=CaseView, responses=_PROBLEM_RESPONSES, tags=["cases"]
    )
    async def get_case(case_id: CaseId, podium: Podium, _: Reader) -> CaseView:
        return await podium.get_case(case_id)

    @app.post(
        "/cases/{case_id}/approve",
        response_model=ApprovalDecisionResult,
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def approve(
        case_id: CaseId, body: Annotated[DecisionBody, Body()], podium: Podium, caller: Caller
    ) -> ApprovalDecisionResult:
        """Approve at the current level; when that completes the approval, answers once the
        refund has been carried out (`gate: approved`), else at once (`gate: open`)."""
        return await _decide(podium, caller, case_id, ApprovalAction.APPROVE, body)

    @app.post(
        "/cases/{case_id}/reject",
        response_model=ApprovalDecisionResult,
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def reject(
        case_id: CaseId, body: Annotated[RejectBody, Body()], podium: Podium, caller: Caller
    ) -> ApprovalDecisionResult:
        """Reject the pending refund; answers once the customer has been told."""
        return await _decide(
            podium, caller, case_id, ApprovalAction.REJECT, body, reason=body.reason
        )

    @app.post(
        "/cases/{case_id}/request-changes",
        response_model=ApprovalDecisionResult,
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def request_changes(
        case_id: CaseId, body: Annotated[RequestChangesBody, Body()], podium: Podium, caller: Caller
    ) -> ApprovalDecisionResult:
        """Approve a lower amount than asked; later levels approve that amount."""
        return await _decide(
            podium,
            caller,
            case_id,
            ApprovalAction.REQUEST_CHANGES,
            body,
            reason=body.reason,
            new_amount_cents=int(body.amount * 100),
        )

    @app.post(
        "/cases/{case_id}/delegate",
        response_model=ApprovalDecisionResult,
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def delegate(
        case_id: CaseId, body: Annotated[DelegateBody, Body()], podium: Podium, caller: Caller
    ) -> ApprovalDecisionResult:
        """Let a named person decide at the current level without holding its role."""
        return await _decide(
            podium,
            caller,
            case_id,
            ApprovalAction.DELEGATE,
            body,
            reason=body.reason,
            delegate_to=body.to,
        )

    @app.get(
        "/approvals/pending",
        response_model=list[PendingApproval],
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def pending_approvals(
        podium: Podium,
        _: Reader,
        min_amount: Annotated[
            float | None, Query(ge=0, allow_inf_nan=False, description="Dollars, exclusive")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
        role: Annotated[
            str | None,
            Query(
                pattern=ROLE_PATTERN,
                description="Only what this role (or user:<name>) may decide now",
            ),
        ] = None,
    ) -> list[PendingApproval]:
        return await podium.list_pending(min_amount=min_amount, limit=limit, role=role)

    @app.get("/approvals", response_model=Inbox, responses=_PROBLEM_RESPONSES, tags=["approvals"])
    async def inbox(
        podium: Podium,
        caller: Reader,
        role: Annotated[
            str | None,
            Query(pattern=ROLE_PATTERN, description="What this role may decide now"),
        ] = None,
        approver: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                description="Also what was delegated to this person (user:<approver>)",
            ),
        ] = None,
        process: Annotated[
            str | None, Query(pattern=PROCESS_PATTERN, description="Only this process")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=INBOX_LIMIT_MAX)] = 100,
    ) -> Inbox:
        """An approver's inbox from Temporal visibility: the most urgent SLA first, with the time
        left (negative: overdue). Eventually consistent: a decision shows a moment later."""
        if role is None and approver is None:
            # Default: the caller's own inbox (their first approval role, what was delegated).
            role = next(iter(caller.decide_roles), None)
            approver = caller.subject
        return await podium.inbox(role=role, approver=approver, process=process, limit=limit)

    @app.get(
        "/approvals/{case_id}",
        response_model=ApprovalView,
        responses=_PROBLEM_RESPONSES,
        tags=["approvals"],
    )
    async def approval(case_id: CaseId, podium: Podium, _: Reader) -> ApprovalView:
        """One approval: the case summary and message, the request (level, roles, SLA,
        deadline, reasons), Podium's recommendation and confidence, the decisions so far."""
        return await podium.approval(case_id)

    @app.get("/inbox", include_in_schema=False)
    async def inbox_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "inbox.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz(podium: Podium) -> Health:
        return Health(temporal_reachable=await podium.ping())

    return app


def _decision_roles(caller: Principal, body: DecisionBody) -> list[str]:
    """The roles the caller decides in: those its credential grants (an admin: every configured
    approval role), narrowed to the body's `roles` when given."""
    if body.approver is not None and body.approver != caller.subject:
        raise forbidden(
            f"approver '{body.approver}' is not the caller; who decides comes from the credential"
        )
    held = caller.decide_roles
    if body.roles is None:
        return held
    missing = [role for role in body.roles if role not in held]
    if missing:
        raise forbidden(f"'{caller.subject}' may not decide as {', '.join(missing)}")
    return list(body.roles)


async def _decide(
    podium: PodiumClient,
    caller: Principal,
    case_id: str,
    action: ApprovalAction,
    body: DecisionBody,
    *,
    reason: str | None = None,
    new_amount_cents: int | None = None,
    delegate_to: str | None = None,
) -> ApprovalDecisionResult:
    roles = _decision_roles(caller, body)
    try:
        return await _decide_as(
            podium,
            caller,
            roles,
            case_id,
            action,
            body,
            reason=reason,
            new_amount_cents=new_amount_cents,
            delegate_to=delegate_to,
        )
    except DecisionRefused:
        # The case refused: if the caller holds none of the roles deciding now and nothing was
        # delegated to them, that is a matter of permission (403), not of the case's state.
        state = (await podium.get_case(case_id)).state
        # Only while the approval is still open: a decided one refuses everyone alike (409).
        approval = state.approval if state is not None and state.decision is None else None
        if (
            approval is not None
            and not set(roles) & set(approval.awaiting_roles)
            and caller.subject not in approval.delegates
        ):
            wanted = " or ".join(approval.awaiting_roles) or "a role of this level"
            raise forbidden(
                f"'{caller.subject}' may not decide at level '{approval.level_name}': "
                f"it needs {wanted}"
            ) from None
        raise


async def _decide_as(
    podium: PodiumClient,
    caller: Principal,
    roles: list[str],
    case_id: str,
    action: ApprovalAction,
    body: DecisionBody,
    *,
    reason: str | None,
    new_amount_cents: int | None,
    delegate_to: str | None,
) -> ApprovalDecisionResult:
    return await podium.decide(
        case_id,
        action,
        caller.subject,
        roles=roles,
        comment=body.comment,
        reason=reason,
        new_amount_cents=new_amount_cents,
        delegate_to=delegate_to,
        request_id=body.request_id,
        decision_id=body.decision_id,
    )


app = create_app()
