"""Who may call Podium's HTTP API, and what they may do.

Credentials:
- services present an API key (`X-API-Key: <key>` or `Authorization: Bearer pk_...`), configured
  as `PODIUM_API_KEYS` = comma-separated `name:key:role1+role2` entries; keys are compared by
  their SHA-256 digests in constant time;
- people present a JWT (`Authorization: Bearer <jwt>`): HS256 signed with `PODIUM_JWT_SECRET`
  (development; `podium up` creates one under the data folder), or RS256 verified against the
  JWKS at `PODIUM_JWT_JWKS_URL` (production). `PODIUM_JWT_AUDIENCE` / `PODIUM_JWT_ISSUER` are
  checked when set. Claims: `sub` is the identity, `roles` a list of role names.

Roles grant permissions (`ROLE_PERMISSIONS`, the one place): `case:start`, `case:read`,
`approval:decide:<approver role>` and `admin` (everything). Every API route needs a credential
except the public ones (`PUBLIC_PATHS`, the docs and /static); a missing or bad one is a 401 with
`WWW-Authenticate: Bearer`, a credential without the permission a 403.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog
from fastapi import HTTPException, Request
from pydantic import SecretStr

from core.codec import load_or_create_secret
from core.settings import Settings

__all__ = [
    "ADMIN",
    "CASE_READ",
    "CASE_START",
    "PUBLIC_PATHS",
    "ROLE_PERMISSIONS",
    "Authenticator",
    "Principal",
    "decide_permission",
    "forbidden",
    "jwt_secret_file",
    "load_or_create_jwt_secret",
    "mint_token",
    "parse_api_keys",
    "require",
]

log = structlog.get_logger()

CASE_START = "case:start"
CASE_READ = "case:read"
ADMIN = "admin"
DECIDE_PREFIX = "approval:decide:"


def decide_permission(approver_role: str) -> str:
    return DECIDE_PREFIX + approver_role


# Role -> permissions. Approval roles the processes' policies name, and those configured in the
# settings (levels, backups), that are not listed here may read cases and decide as themselves
# (`Authenticator.permissions_for`).
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "service": frozenset({CASE_START, CASE_READ}),
    "agent": frozenset({CASE_READ}),
    "team_lead": frozenset({CASE_READ, decide_permission("team_lead")}),
    "finance": frozenset({CASE_READ, decide_permission("finance")}),
    "ops_manager": frozenset({CASE_READ, decide_permission("ops_manager")}),
    "admin": frozenset({ADMIN}),
}

# Routes anyone may call: liveness and the approvers' page (its API calls are protected).
# FastAPI's /docs and /openapi.json and the /static mount are not API routes and stay public.
# The carrier's webhook carries its own credential: an HMAC signature of the body.
# /metrics: Prometheus scrapes without a credential; it holds no personal data.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/inbox", "/carrier/webhooks"})

API_KEY_PREFIX = "pk_"
JWT_ALGORITHMS_HS = ["HS256"]
JWT_ALGORITHMS_RS = ["RS256"]
JWKS_CACHE_SECONDS = 300
JWT_LEEWAY_SECONDS = 30
DEV_TOKEN_TTL_SECONDS = 30 * 24 * 3600
JWT_SECRET_FILE = "jwt-secret"


@dataclass(frozen=True)
class Principal:
    """The caller: `subject` (a person's `sub`, a service's key name) and its roles."""

    subject: str
    roles: tuple[str, ...]
    permissions: frozenset[str]
    kind: str = "user"  # "user" (JWT) or "service" (API key)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.permissions

    def can(self, permission: str) -> bool:
        return self.is_admin or permission in self.permissions

    @property
    def decide_roles(self) -> list[str]:
        """The approval roles this caller may decide in."""
        return [
            p.removeprefix(DECIDE_PREFIX)
            for p in sorted(self.permissions)
            if p.startswith(DECIDE_PREFIX)
        ]


@dataclass(frozen=True)
class _ApiKey:
    name: str
    digest: bytes
    roles: tuple[str, ...]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def parse_api_keys(value: SecretStr | None) -> list[_ApiKey]:
    """`name:key:role1+role2,...`; raises ValueError naming the entry (never the key)."""
    if value is None:
        return []
    keys = []
    for number, entry in enumerate(value.get_secret_value().split(","), start=1):
        entry = entry.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3 or not all(part.strip() for part in parts):
            raise ValueError(f"PODIUM_API_KEYS entry {number}: expected name:key:role1+role2")
        name, key, roles = (part.strip() for part in parts)
        keys.append(_ApiKey(name, _digest(key), tuple(r for r in roles.split("+") if r)))
    return keys


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def forbidden(detail: str) -> HTTPException:
    return HTTPException(403, detail)


@dataclass
class Authenticator:
    """Turns a request's credential into a `Principal` (or a 401)."""

    settings: Settings
    # The approval roles the registered processes' policies name (`starter.api.roles`); the
    # settings' approval roles are added to them.
    process_roles: frozenset[str] = frozenset()
    _keys: list[_ApiKey] = field(init=False)
    _jwks: jwt.PyJWKClient | None = field(init=False, default=None)
    _role_permissions: dict[str, frozenset[str]] = field(init=False)
    _hs_secret: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._keys = parse_api_keys(self.settings.api_keys)
        if self.settings.jwt_jwks_url:
            self._jwks = jwt.PyJWKClient(
                self.settings.jwt_jwks_url, cache_keys=True, lifespan=JWKS_CACHE_SECONDS
            )
        secret = self.settings.jwt_secret
        # An empty secret would verify tokens anyone can sign: as good as none.
        self._hs_secret = secret.get_secret_value() if secret is not None else ""
        self._role_permissions = dict(ROLE_PERMISSIONS)
        for role in self.approval_roles:
            self._role_permissions.setdefault(role, frozenset({CASE_READ, decide_permission(role)}))

    @property
    def approval_roles(self) -> list[str]:
        s = self.settings
        return sorted(
            {
                *self.process_roles,
                *s.approval_team_lead_roles,
                *s.approval_finance_roles,
                *s.approval_backup_roles,
            }
        )

    def permissions_for(self, roles: Iterable[str]) -> frozenset[str]:
        result: set[str] = set()
        for role in roles:
            result |= self._role_permissions.get(role, frozenset())
        if ADMIN in result:  # an admin may decide in every approval role
            result |= {decide_permission(role) for role in self.approval_roles}
        return frozenset(result)

    async def authenticate(self, request: Request) -> Principal:
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if api_key is None and scheme.lower() == "bearer" and credential.startswith(API_KEY_PREFIX):
            api_key = credential
        if api_key is not None:
            return self._from_api_key(api_key)
        if scheme.lower() != "bearer" or not credential:
            raise unauthorized("credentials required: a bearer token or an API key")
        return await self._from_jwt(credential)

    def _from_api_key(self, presented: str) -> Principal:
        digest = _digest(presented)
        found: _ApiKey | None = None
        for key in self._keys:  # no early exit: the time taken does not depend on which matched
            if hmac.compare_digest(digest, key.digest):
                found = key
        if found is None:
            raise unauthorized("unknown API key")
        return Principal(found.name, found.roles, self.permissions_for(found.roles), "service")

    async def _from_jwt(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("malformed bearer token") from None
        algorithm = header.get("alg")
        key: Any
        if algorithm in JWT_ALGORITHMS_RS and self._jwks is not None:
            jwks = self._jwks
            try:
                # PyJWKClient fetches with urllib (blocking) when its cache misses.
                signing = await asyncio.to_thread(jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWTError as err:
                log.info("api_token_refused", reason="jwks", error=str(err))
                raise unauthorized("token signing key unknown") from None
            key, algorithms = signing.key, JWT_ALGORITHMS_RS
        elif algorithm in JWT_ALGORITHMS_HS and self._hs_secret:
            key, algorithms = self._hs_secret, JWT_ALGORITHMS_HS
        else:
            raise unauthorized("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=JWT_LEEWAY_SECONDS,
                options={
                    "require": ["sub", "exp"],
                    "verify_aud": self.settings.jwt_audience is not None,
                },
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.PyJWTError as err:
            log.info("api_token_refused", reason=type(err).__name__)
            raise unauthorized("invalid token") from None
        subject = claims.get("sub")
        roles = claims.get("roles", [])
        if not isinstance(subject, str) or not subject.strip():
            raise unauthorized("token has no subject")
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise unauthorized("token roles must be a list of names")
        return Principal(subject.strip(), tuple(roles), self.permissions_for(roles))


def _authenticator(request: Request) -> Authenticator:
    authenticator = request.app.state.authenticator
    assert isinstance(authenticator, Authenticator)
    return authenticator


async def authenticate(request: Request) -> Principal | None:
    """App-wide dependency: every route needs a credential unless its path is public."""
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    if path in PUBLIC_PATHS:
        return None
    principal = await _authenticator(request).authenticate(request)
    request.state.principal = principal
    return principal


def require(permission: str | None = None) -> Callable[[Request], Awaitable[Principal]]:
    """Route dependency: the caller, who must hold `permission` (None: any caller)."""

    async def dependency(request: Request) -> Principal:
        principal = getattr(request.state, "principal", None)
        if not isinstance(principal, Principal):
            principal = await _authenticator(request).authenticate(request)
            request.state.principal = principal
        if permission is not None and not principal.can(permission):
            raise forbidden(f"'{principal.subject}' lacks the permission {permission}")
        return principal

    return dependency


# --- development tokens -------------------------------------------------------------------------


def jwt_secret_file(settings: Settings) -> Path:
    return settings.data_dir / "keys" / JWT_SECRET_FILE


def load_or_create_jwt_secret(settings: Settings) -> str:
    """The development JWT secret under the data folder (mode 0600), created once."""
    return load_or_create_secret(jwt_secret_file(settings), lambda: secrets.token_urlsafe(48))


def mint_token(
    secret: str,
    subject: str,
    roles: Iterable[str],
    *,
    ttl_seconds: int = DEV_TOKEN_TTL_SECONDS,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token, for development and tests."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")
