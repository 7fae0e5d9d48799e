"""What a request must show before the API reads its body (an ASGI middleware, `RequestGuard`).

In this order, for every HTTP request:

1. A protected path (every path but `starter.auth.PUBLIC_PATHS`, the docs and /static, which
   are not API routes) needs a credential, checked on the headers alone with the app's
   `Authenticator`: without one the answer is 401 and not a byte of the body is read. A caller
   who cannot get in cannot make the API hold 200 MB for them.
2. A body over the limit (`PODIUM_API_MAX_BODY_BYTES`, default 16 MiB: the largest legitimate
   body is a 10 MB receipt as base64 in JSON, about 14 MB) is refused with 413: at once when
   its Content-Length says so, else as soon as the bytes streamed in pass the limit.
3. A JSON body is parsed here once, strictly: one that does not parse (bad UTF-8, bad JSON,
   nesting too deep for the parser) or that holds a key twice in one object (which would
   otherwise mean "the last one wins", e.g. a case opened for the second `customer_id`) is a
   422 problem naming the position or the key. The route then parses the same bytes.

Refusals are `application/problem+json` like every other error (`starter.api.problems`). What
the client still sends of a refused body, the server reads and drops as it arrives (uvicorn
does, once the answer is complete): memory stays flat, and the connection is not reset under
the client, which would lose the answer with the unread bytes.
"""

from __future__ import annotations

import json
from email.message import Message as MimeMessage
from typing import Any

import structlog
from fastapi import HTTPException
from fastapi.routing import APIRoute
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from starter.api.problems import PROBLEM_TYPE_PREFIX, FieldError, problem_response
from starter.auth import PUBLIC_PATHS, Authenticator

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ApiLimits", "RequestGuard", "strict_json"]

log = structlog.get_logger()

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 16 * MiB
MIN_MAX_BODY_BYTES = 64 * 1024


class ApiLimits(BaseSettings):
    """The API's own limits, read once where the app is built (`PODIUM_API_` prefix)."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_API_", env_file=".env", extra="ignore")

    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=MIN_MAX_BODY_BYTES,
        description="Largest request body accepted, bytes; larger ones get 413",
    )


class _BodyTooLarge(Exception):
    pass


class _InvalidJson(Exception):
    def __init__(self, message: str, field: str = "body", type_: str = "json_invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.type = type_


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise _InvalidJson(f"duplicate key '{key}' in a JSON object", key, "duplicate_key")
        keys.add(key)
    return dict(pairs)


def strict_json(body: bytes) -> Any:
    """`body` parsed as JSON (UTF-8, -16 or -32, as `json.loads` detects it); `_InvalidJson`
    when it does not parse or an object holds a key twice."""
    try:
        return json.loads(body, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise _InvalidJson(f"JSON decode error at position {err.pos}: {err.msg}") from None
    except UnicodeDecodeError:
        raise _InvalidJson("the body is not valid UTF-8 (nor UTF-16 or UTF-32) text") from None
    except RecursionError:
        raise _InvalidJson("the JSON body is nested too deeply") from None


def _is_json(content_type: str | None) -> bool:
    # As FastAPI decides whether to parse a body as JSON.
    if not content_type:
        return False
    message = MimeMessage()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None  # the server refuses a malformed length before the app sees the request


class RequestGuard:
    """Authentication before the body, a body size limit, strict JSON (see the module)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = _content_length(headers)
        refusal = await self._authentication_refusal(scope)
        if refusal is not None:
            status, detail, auth_headers = refusal
            await self._refuse(scope, receive, send, status, detail, "unauthorized", auth_headers)
            return
        if length is not None and length > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        try:
            first = await self._read_body(receive)
        except _BodyTooLarge:
            await self._too_large(scope, receive, send)
            return
        if first is None:
            return  # the client went away before it finished sending
        body = first.get("body", b"")
        if body and _is_json(headers.get("content-type")):
            try:
                strict_json(body)
            except _InvalidJson as err:
                error = FieldError(
                    field=err.field, location="body", message=err.message, type=err.type
                )
                await self._refuse(
                    scope, receive, send, 422, err.message, "validation", errors=[error]
                )
                return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _authentication_refusal(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, detail, headers) when a protected route is called without a credential that
        holds; None when the request may go on (its body has not been touched)."""
        app = scope.get("app")
        authenticator = getattr(getattr(app, "state", None), "authenticator", None)
        if not isinstance(authenticator, Authenticator) or not _protected(app, scope):
            return None
        try:
            await authenticator.authenticate(Request(scope))
        except HTTPException as err:
            return err.status_code, str(err.detail), dict(err.headers or {})
        return None

    async def _read_body(self, receive: Receive) -> Message | None:
        """The whole body as one `http.request` message, counted as it streams in."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return {"type": "http.request", "body": body, "more_body": False}

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"the request body is larger than the limit of {self.max_body_bytes} bytes"
        await self._refuse(scope, receive, send, 413, detail, "content-too-large")

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        detail: str,
        slug: str,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        path = scope.get("path")
        log.info("api_request_refused", path=path, status=status, problem=slug)
        titles = {401: "Unauthorized", 413: "Content too large", 422: "Invalid request"}
        response = problem_response(
            status,
            titles.get(status, "Refused"),
            detail,
            type_=PROBLEM_TYPE_PREFIX + slug,
            instance=path,
            errors=errors,
            headers=headers or None,
        )
        await response(scope, receive, send)


def _protected(app: Any, scope: Scope) -> bool:
    """False for the public paths: `starter.auth.PUBLIC_PATHS`, and what is not an API route
    (the docs, mounted static files), as the app-wide dependency of `starter.auth` sees it.
    Everything else needs a credential, unknown paths too: a caller who cannot get in learns
    nothing of the routes, not even which exist."""
    path: str = scope.get("path", "")
    if path in PUBLIC_PATHS:
        return False
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount) and path.startswith(route.path.rstrip("/") + "/"):
            return False
        if isinstance(route, Route) and not isinstance(route, APIRoute) and route.path == path:
            return False
    return True
