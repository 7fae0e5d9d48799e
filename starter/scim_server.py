"""The embedded SCIM 2.0 directory: users and groups, seeded with Podium's demo employees.

    python -m starter.scim_server                  # 127.0.0.1:8470, /v2; `podium up` starts it
    PODIUM_SCIM_TOKEN=... python -m starter.scim_server --port 8470

The protocol is `scim2-server`'s (RFC 7643/7644: Users with the enterprise extension, Groups,
filters, PATCH, ETags) on its in-memory storage, served by uvicorn on loopback only. Each start
seeds the same demo employees (`DEMO_EMPLOYEES`: role as `title`, department, manager and
employee number in the enterprise extension, `active` false for people who left) and groups
(`DEMO_GROUPS`; `admins` and `finance` make an account privileged) and the application access
groups of the entitlement catalogue (`APP_GROUPS`, empty). Writes live in memory and
are gone at the next start: a demo directory, not a store. Point Podium at a real directory
(Okta, Entra ID, ...) with `PODIUM_SCIM_URL` and `PODIUM_SCIM_TOKEN` instead.

Requests need `Authorization: Bearer <PODIUM_SCIM_TOKEN>` when a token is set (the runtime
always sets one). Password changes are supported (`changePassword`); SCIM never returns
passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from scim2_models import ScimProvider, UnauthorizedException
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.testserver.application import BEARER_TOKEN_SCHEME
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

__all__ = [
    "APP_GROUPS",
    "DEFAULT_PORT",
    "DEMO_EMPLOYEES",
    "DEMO_GROUPS",
    "DemoEmployee",
    "ScimApplication",
    "build_app",
    "dev_env",
    "seed",
    "seeded_app",
    "serving",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
EMAIL_DOMAIN = "example.com"


@dataclass(frozen=True)
class DemoEmployee:
    user_name: str
    name: str
    title: str
    department: str
    manager: str | None
    groups: tuple[str, ...]
    active: bool = True


# App groups and the privileged ones (`admins`, `finance`): a reset of their members' accounts
# always waits for a person's approval.
DEMO_GROUPS = ("employees", "engineering", "sales", "support", "finance", "admins", "it_security")
# Application access groups of the entitlement catalogue (`catalogues/access.yaml`): the
# `access_request` process adds and removes members; nobody is seeded in them.
APP_GROUPS = (
    "app-github-read",
    "app-github-write",
    "app-github-admin",
    "app-salesforce-user",
    "app-salesforce-admin",
    "app-zendesk-agent",
    "app-zendesk-reports",
    "app-payroll-viewer",
)

DEMO_EMPLOYEES = (
    DemoEmployee("maria.chen", "Maria Chen", "Engineering Manager", "Engineering", None,
                 ("employees", "engineering")),
    DemoEmployee("ana.lima", "Ana Lima", "Software Engineer", "Engineering", "maria.chen",
                 ("employees", "engineering")),
    DemoEmployee("ben.okafor", "Ben Okafor", "Account Executive", "Sales", "sofia.rossi",
                 ("employees", "sales")),
    DemoEmployee("sofia.rossi", "Sofia Rossi", "Head of Sales", "Sales", None,
                 ("employees", "sales")),
    DemoEmployee("lee.wong", "Lee Wong", "Support Agent", "Customer Support", "omar.haddad",
                 ("employees", "support")),
    DemoEmployee("omar.haddad", "Omar Haddad", "Support Lead", "Customer Support", None,
                 ("employees", "support")),
    DemoEmployee("carla.diaz", "Carla Diaz", "Financial Analyst", "Finance", "james.park",
                 ("employees", "finance")),
    DemoEmployee("james.park", "James Park", "Controller", "Finance", None,
                 ("employees", "finance")),
    DemoEmployee("dev.patel", "Dev Patel", "Systems Administrator", "IT", "grace.kim",
                 ("employees", "admins")),
    DemoEmployee("grace.kim", "Grace Kim", "IT Security Lead", "IT", None,
                 ("employees", "it_security")),
    DemoEmployee("tom.berg", "Tom Berg", "Support Agent", "Customer Support", "omar.haddad",
                 ("support",), active=False),
)  # fmt: skip


class ScimApplication(ASGIApplication):
    """`scim2-server`'s ASGI application with static bearer tokens (none: open, tests only)."""

    def __init__(self, provider: ScimProvider, tokens: frozenset[str]) -> None:
        super().__init__(
            AsyncInMemoryStorage(),
            provider,
            ScimService(provider, secret=secrets.token_urlsafe(32)),
        )
        self._tokens = tokens

    def check_auth(self, request: ScimRequest) -> None:
        if not self._tokens:
            return
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            secrets.compare_digest(token, known) for known in self._tokens
        ):
            raise UnauthorizedException


def build_app(token: str | None) -> ScimApplication:
    """An empty directory serving Users (with the enterprise extension) and Groups."""
    config = load_default_service_provider_config()
    config.change_password.supported = True  # type: ignore[union-attr]
    if token:
        config.authentication_schemes = [
            *(config.authentication_schemes or []),
            BEARER_TOKEN_SCHEME,
        ]
    provider = ScimProvider.from_discovery(
        load_default_schemas().values(), load_default_resource_types().values(), config=config
    )
    return ScimApplication(provider, frozenset({token} if token else ()))


def _user(employee: DemoEmployee, ids: dict[str, str]) -> dict[str, Any]:
    given, _, family = employee.name.partition(" ")
    enterprise: dict[str, Any] = {
        "employeeNumber": f"E{1001 + DEMO_EMPLOYEES.index(employee)}",
        "department": employee.department,
        "organization": "Podium Demo Inc.",
    }
    if employee.manager:
        enterprise["manager"] = {"value": ids[employee.manager]}
    return {
        "schemas": [CORE_USER, ENTERPRISE_USER],
        "userName": employee.user_name,
        "externalId": employee.user_name,
        "name": {"givenName": given, "familyName": family},
        "displayName": employee.name,
        "title": employee.title,
        "active": employee.active,
        "emails": [
            {"value": f"{employee.user_name}@{EMAIL_DOMAIN}", "type": "work", "primary": True}
        ],
        ENTERPRISE_USER: enterprise,
    }


async def seed(client: httpx.AsyncClient) -> dict[str, str]:
    """Create the demo employees (managers first) and groups through the SCIM protocol itself;
    user name -> SCIM id."""
    ids: dict[str, str] = {}
    pending = list(DEMO_EMPLOYEES)
    while pending:
        ready = [e for e in pending if e.manager is None or e.manager in ids]
        for employee in ready:
            response = await client.post("/Users", json=_user(employee, ids))
            response.raise_for_status()
            ids[employee.user_name] = response.json()["id"]
            pending.remove(employee)
    for group in (*DEMO_GROUPS, *APP_GROUPS):
        members = [
            {"value": ids[e.user_name], "type": "User"} for e in DEMO_EMPLOYEES if group in e.groups
        ]
        response = await client.post(
            "/Groups", json={"schemas": [CORE_GROUP], "displayName": group, "members": members}
        )
        response.raise_for_status()
    return ids


async def seeded_app(token: str | None) -> ScimApplication:
    """A directory holding the demo employees and groups."""
    app = build_app(token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # scim2-server types the ASGI scope as a dict, httpx as a mapping: the same protocol.
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport, base_url="http://scim.local/v2", headers=headers
    ) as client:
        await seed(client)
    return app


def dev_env(environ: dict[str, str]) -> dict[str, str]:
    """What `podium up` adds to its children's environment for the embedded directory: its URL
    (port `PODIUM_SCIM_EMBEDDED_PORT`, default 8470) and a token drawn for this run. Empty when
    `PODIUM_SCIM_URL` names a directory already."""
    if environ.get("PODIUM_SCIM_URL"):
        return {}
    port = int(environ.get("PODIUM_SCIM_EMBEDDED_PORT") or DEFAULT_PORT)
    return {
        "PODIUM_SCIM_URL": f"http://{DEFAULT_HOST}:{port}/v2",
        "PODIUM_SCIM_TOKEN": environ.get("PODIUM_SCIM_TOKEN") or secrets.token_urlsafe(24),
        "PODIUM_SCIM_EMBEDDED_PORT": str(port),
    }


@asynccontextmanager
async def serving(
    token: str | None, *, host: str = DEFAULT_HOST, port: int = 0
) -> AsyncIterator[tuple[str, ScimApplication]]:
    """A seeded directory served on `host` (a free port by default) in this event loop, for
    tests and benchmarks: its SCIM base URL and the application."""
    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
    app = await seeded_app(token)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why uvicorn could not start
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}/v2", app
    finally:
        server.should_exit = True
        await task


async def _serve(host: str, port: int, token: str | None) -> None:
    app = await seeded_app(token)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    )
    await server.serve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="loopback by default")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PODIUM_SCIM_EMBEDDED_PORT", DEFAULT_PORT))
    )
    args = parser.parse_args()
    asyncio.run(_serve(args.host, args.port, os.environ.get("PODIUM_SCIM_TOKEN") or None))


if __name__ == "__main__":
    main()
