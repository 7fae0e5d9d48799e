"""Credentials for tests that call the HTTP API: tokens minted with a test-only secret.

Put `TEST_JWT_SECRET` in the app's Settings (`jwt_secret=...`) and send `token(...)` as a bearer,
or hand `AsCaller()` to an httpx client as its `auth`.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence

import httpx

from starter.auth import mint_token

__all__ = ["TEST_JWT_SECRET", "AsCaller", "bearer", "token"]

# For tests only, never a real secret.
TEST_JWT_SECRET = "podium-test-secret-not-for-production-0123456789"


def token(subject: str, roles: Sequence[str] = (), **kwargs: object) -> str:
    return mint_token(TEST_JWT_SECRET, subject, roles, **kwargs)  # type: ignore[arg-type]


def bearer(subject: str, roles: Sequence[str] = ()) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(subject, roles)}"}


class AsCaller(httpx.Auth):
    """Signs every request in as someone: a decision as the body's `approver` with its `roles`
    (the API takes who decides from the token), a new case as its `requested_by` (a service),
    anything else as `subject` with `roles` (default: an admin)."""

    def __init__(self, subject: str = "tester@example.com", roles: Sequence[str] = ("admin",)):
        self.subject = subject
        self.roles = list(roles)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        subject, roles = self.subject, self.roles
        body = None
        if request.method == "POST" and request.content:
            try:
                body = json.loads(request.content)
            except ValueError:
                body = None
        if isinstance(body, dict):
            if isinstance(body.get("approver"), str) and body["approver"].strip():
                subject, roles = body["approver"].strip(), list(body.get("roles") or [])
            elif isinstance(body.get("requested_by"), str):
                subject, roles = body["requested_by"], ["service"]
        request.headers["Authorization"] = f"Bearer {token(subject, roles)}"
        yield request
