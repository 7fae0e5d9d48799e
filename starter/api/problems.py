"""Podium's errors as RFC 9457 `application/problem+json` answers; callers never see a stack
trace. `install(app)` adds the handlers and the middleware that turns a crash into a 500."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.client import (
    ApprovalNotFound,
    CaseClosed,
    CaseNotFound,
    CodeNotAwaited,
    DecisionRefused,
    IdempotencyConflict,
    InvalidRequest,
    NotTheEmployee,
    PodiumError,
    ProcessNotFound,
    TemporalUnavailable,
    TooManyAttempts,
    VerificationLocked,
)

__all__ = [
    "LIMITED_PROBLEM_RESPONSES",
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_RESPONSES",
    "FieldError",
    "Problem",
    "install",
    "problem_response",
]

log = structlog.get_logger()

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:podium:problem:"


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
    decision_id: str | None = Field(
        default=None,
        description="A decision that may still be applied: retry with this `decision_id` to "
        "get its result (the same id never applies twice)",
    )


# Podium's errors and the HTTP answer each one gets: status, problem type, title.
_PROBLEMS: dict[type[PodiumError], tuple[int, str, str]] = {
    CaseNotFound: (404, "case-not-found", "Case not found"),
    ProcessNotFound: (404, "process-not-found", "Process not found"),
    ApprovalNotFound: (404, "approval-not-found", "Approval not found"),
    CaseClosed: (409, "case-closed", "Case closed"),
    IdempotencyConflict: (409, "idempotency-conflict", "Idempotency key reused"),
    DecisionRefused: (409, "decision-refused", "Decision refused"),
    # Subclass first: the first class an error is an instance of decides.
    VerificationLocked: (409, "verification-locked", "Verification locked"),
    CodeNotAwaited: (409, "code-not-awaited", "No code awaited"),
    NotTheEmployee: (403, "not-the-employee", "Not the employee"),
    TooManyAttempts: (429, "too-many-attempts", "Too many attempts"),
    InvalidRequest: (422, "invalid-request", "Invalid request"),
    TemporalUnavailable: (503, "temporal-unavailable", "Temporal unavailable"),
}

# Refusals by starter.auth: no or a bad credential, or one without the permission.
_AUTH_PROBLEMS = {401: "unauthorized", 403: "forbidden"}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}}
    for status in (401, 403, 404, 409, 413, 422, 503)
}
# Routes that bound what a caller may try also answer 429.
LIMITED_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **PROBLEM_RESPONSES,
    429: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}},
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
    decision_id: str | None = None,
) -> JSONResponse:
    problem = Problem(
        type=type_,
        title=title,
        status=status,
        detail=detail,
        instance=instance,
        errors=errors,
        decision_id=decision_id,
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


def install(app: FastAPI) -> None:
    app.add_middleware(_ProblemOnCrash)

    @app.exception_handler(PodiumError)
    async def _podium_error(request: Request, exc: PodiumError) -> JSONResponse:
        status, slug, title = next(
            (problem for cls, problem in _PROBLEMS.items() if isinstance(exc, cls)),
            (500, "internal", "Internal error"),
        )
        errors = None
        if isinstance(exc, InvalidRequest) and exc.errors:
            errors = _field_errors(
                {**error, "loc": (exc.location, *error.get("loc", ()))} for error in exc.errors
            )
        elif isinstance(exc, InvalidRequest) and exc.field:
            errors = [
                FieldError(
                    field=exc.field, location=exc.location, message=exc.message, type="value_error"
                )
            ]
        headers = {"Retry-After": "5"} if status == 503 else None
        detail = exc.message
        # A decision that timed out may still be applied: the caller must retry with its id (a
        # retry without one would be a new decision, refused once the first one closed the case).
        decision_id = getattr(exc, "decision_id", None)
        if decision_id is not None and decision_id not in detail:
            detail += f"; it may still be applied: retry with decision_id '{decision_id}'"
        log.info("api_request_refused", path=request.url.path, status=status, problem=slug)
        return problem_response(
            status,
            title,
            detail,
            type_=PROBLEM_TYPE_PREFIX + slug,
            instance=request.url.path,
            errors=errors,
            headers=headers,
            decision_id=decision_id,
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
        if exc.status_code == 400:
            # FastAPI's "error parsing the body": an invalid request like any other (422), as
            # the OpenAPI declares; `starter.api.guard` catches most of these first.
            message = exc.detail if isinstance(exc.detail, str) else "the body could not be read"
            error = FieldError(field="body", location="body", message=message, type="body_invalid")
            return problem_response(
                422,
                "Invalid request",
                message,
                type_=PROBLEM_TYPE_PREFIX + "validation",
                instance=request.url.path,
                errors=[error],
            )
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
