# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""Access control for the HTTP API (starter/auth.py).

Every route the app has is probed without a credential, so a new route cannot slip through
unprotected. Tokens are minted with the test secret (tests/auth_helpers.py); RS256 tokens are
checked against a real JWKS served on loopback; the end-to-end test runs the real refund workflow
and its activities and checks that the decisions and the audit trail name the token's subject.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from activities.intelligence import EmbeddedModels
from core.db import AuditEvent
from core.settings import Settings
from starter.api import create_app
from starter.auth import PUBLIC_PATHS, ROLE_PERMISSIONS, parse_api_keys
from starter.cli import create_cli
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import TEST_JWT_SECRET, AsCaller, bearer, token

PROBLEM = "application/problem+json"
API_KEYS = "intake:pk_test_intake_0123456789:service,viewer:rk-viewer-0123456789:agent"
AUDIENCE = "podium-api"
ISSUER = "https://id.example.test"


def make_settings(**overrides: Any) -> Settings:
    overrides.setdefault("task_queue", f"auth-{uuid.uuid4().hex}")
    overrides.setdefault("jwt_secret", TEST_JWT_SECRET)
    overrides.setdefault("api_keys", API_KEYS)
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def api(
    env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async def factory(_: Settings) -> Client:
        return env.client

    app = create_app(settings, factory)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield app, http


@pytest.fixture
async def http(dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    async with api(dev_env, make_settings()) as (_, client):
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert (status, True, True) == (problem["status"], bool(problem["title"]), "detail" in problem)
    assert problem["type"].startswith("urn:podium:problem:")
    assert "Traceback" not in response.text
    return problem


def assert_unauthorized(response: httpx.Response) -> None:
    assert_problem(response, 401)
    assert "Bearer" == response.headers["www-authenticate"]


def refund_body(**overrides: Any) -> dict[str, Any]:
    return {
        "channel": "email",
        "customer_id": "C-1002",
        "order_id": "O-12000",
        "message": "The blender arrived broken. I want my money back.",
        **overrides,
    }


# --- roles and keys -----------------------------------------------------------------------------


def test_default_roles_grant_what_the_issue_asks() -> None:
    expected = {
        "service": {"case:start", "case:read"},
        "agent": {"case:read"},
        "team_lead": {"case:read", "approval:decide:team_lead"},
        "finance": {"case:read", "approval:decide:finance"},
        "admin": {"admin"},
    }
    assert expected == {role: set(ROLE_PERMISSIONS[role]) for role in expected}


def test_api_keys_parse_and_never_show_the_key_in_errors() -> None:
    keys = parse_api_keys(SecretStr(API_KEYS))
    assert [("intake", ("service",)), ("viewer", ("agent",))] == [(k.name, k.roles) for k in keys]
    with pytest.raises(ValueError, match="entry 1") as caught:
        parse_api_keys(SecretStr("only-a-s3cret"))
    assert "s3cret" not in str(caught.value)


# --- every protected route refuses a missing or bad credential ----------------------------------


def _probe_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "refund-x", path)


async def test_every_route_but_the_public_ones_needs_a_credential(
    dev_env: WorkflowEnvironment,
) -> None:
    async with api(dev_env, make_settings()) as (app, http):
        # Every API route, from the app's own OpenAPI (routers included at any depth).
        routes = [
            (method.upper(), path)
            for path, operations in app.openapi()["paths"].items()
            if path not in PUBLIC_PATHS
            for method in sorted(operations)
        ]
        # The routes the issue names, at least: a listing that missed them would prove nothing.
        assert {
            ("POST", "/cases/refund"),
            ("GET", "/cases/{case_id}"),
            ("POST", "/cases/{case_id}/approve"),
            ("POST", "/cases/{case_id}/reject"),
            ("POST", "/cases/{case_id}/request-changes"),
            ("POST", "/cases/{case_id}/delegate"),
            ("GET", "/approvals"),
            ("GET", "/approvals/{case_id}"),
            ("GET", "/approvals/pending"),
            ("POST", "/documents"),
        } <= set(routes)
        bad = {
            "none": {},
            "garbage bearer": {"Authorization": "Bearer not-a-jwt"},
            "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
            "unknown key": {"X-API-Key": "pk_nope"},
            "unsigned": {
                "Authorization": "Bearer "
                + jwt.encode({"sub": "x", "roles": ["admin"]}, key=None, algorithm="none")
            },
        }
        for method, path in routes:
            for name, headers in bad.items():
                response = await http.request(method, _probe_path(path), headers=headers)
                assert 401 == response.status_code, (method, path, name, response.text)
                assert_unauthorized(response)

        for public in ("/healthz", "/inbox", "/docs", "/openapi.json", "/static/inbox.js"):
            assert 200 == (await http.get(public)).status_code, public


# --- tokens -------------------------------------------------------------------------------------


async def test_expired_forged_and_wrong_audience_tokens_are_refused(
    dev_env: WorkflowEnvironment,
) -> None:
    settings = make_settings(jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    probe = f"/cases/refund-{uuid.uuid4().hex}"  # 404 once past authentication
    async with api(dev_env, settings) as (_, http):

        def with_token(value: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {value}"}

        good = token("ann@example.com", ["agent"], audience=AUDIENCE, issuer=ISSUER)
        assert 404 == (await http.get(probe, headers=with_token(good))).status_code

        refused = {
            "expired": token(
                "ann@example.com",
                ["agent"],
                audience=AUDIENCE,
                issuer=ISSUER,
                now=time.time() - 7_200,
                ttl_seconds=3_600,
            ),
            "forged": jwt.encode(
                {
                    "sub": "ann@example.com",
                    "roles": ["admin"],
                    "aud": AUDIENCE,
                    "iss": ISSUER,
                    "exp": int(time.time()) + 600,
                },
                "another-secret-of-sufficient-length-0123456789",
                algorithm="HS256",
            ),
            "wrong audience": token("ann@example.com", ["agent"], audience="other", issuer=ISSUER),
            "no audience": token("ann@example.com", ["agent"], issuer=ISSUER),
            "wrong issuer": token("ann@example.com", ["agent"], audience=AUDIENCE, issuer="evil"),
        }
        for name, value in refused.items():
            response = await http.get(probe, headers=with_token(value))
            assert 401 == response.status_code, (name, response.text)
            assert_unauthorized(response)
        expired = await http.get(probe, headers=with_token(refused["expired"]))
        assert "token expired" == expired.json()["detail"]


class _Jwks:
    """A JWKS endpoint on 127.0.0.1 that counts how often it is fetched."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.fetches = 0
        body = json.dumps(document).encode()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.fetches += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey) -> Iterator[_Jwks]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    served = _Jwks({"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    thread.join(timeout=5)


async def test_rs256_tokens_are_verified_against_the_jwks(
    dev_env: WorkflowEnvironment, rsa_key: rsa.RSAPrivateKey, jwks: _Jwks
) -> None:
    settings = make_settings(jwt_secret=None, jwt_jwks_url=jwks.url, jwt_audience=AUDIENCE)
    claims = {
        "sub": "lead@example.com",
        "roles": ["team_lead"],
        "aud": AUDIENCE,
        "exp": int(time.time()) + 600,
    }
    probe = f"/cases/refund-{uuid.uuid4().hex}"
    async with api(dev_env, settings) as (_, http):
        signed = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "k1"})
        for _ in range(3):
            response = await http.get(probe, headers={"Authorization": f"Bearer {signed}"})
            assert 404 == response.status_code, response.text
        assert 1 == jwks.fetches  # the keys are cached

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
        assert_unauthorized(await http.get(probe, headers={"Authorization": f"Bearer {forged}"}))
        # HS256 is not accepted when only a JWKS is configured (no algorithm confusion).
        hs = token("lead@example.com", ["team_lead"], audience=AUDIENCE)
        assert_unauthorized(await http.get(probe, headers={"Authorization": f"Bearer {hs}"}))


# --- permissions --------------------------------------------------------------------------------


async def test_api_keys_start_cases_and_roles_are_enforced(
    dev_env: WorkflowEnvironment, http: httpx.AsyncClient
) -> None:
    created = await http.post(
        "/cases/refund", json=refund_body(), headers={"X-API-Key": "pk_test_intake_0123456789"}
    )
    assert 201 == created.status_code, created.text
    case_id = created.json()["case_id"]
    try:
        description = await dev_env.client.get_workflow_handle(case_id).describe()
        assert "refund" == description.workflow_type
        as_bearer = await http.get(
            f"/cases/{case_id}", headers={"Authorization": "Bearer pk_test_intake_0123456789"}
        )
        assert 200 == as_bearer.status_code, as_bearer.text

        # The viewer key (agent) reads but may not start; a person with `agent` neither.
        viewer = {"X-API-Key": "rk-viewer-0123456789"}
        assert 200 == (await http.get(f"/cases/{case_id}", headers=viewer)).status_code
        for headers in (viewer, bearer("ann@example.com", ["agent"])):
            refused = await http.post("/cases/refund", json=refund_body(), headers=headers)
            problem = assert_problem(refused, 403)
            assert "urn:podium:problem:forbidden" == problem["type"]
            assert "case:start" in problem["detail"]
        # A token without roles reads nothing.
        assert_problem(
            await http.get(f"/cases/{case_id}", headers=bearer("nobody@example.com")), 403
        )
        # Nobody opens a case in someone else's name.
        impersonating = await http.post(
            "/cases/refund",
            json=refund_body(requested_by="ceo@example.com"),
            headers={"X-API-Key": "pk_test_intake_0123456789"},
        )
        assert_problem(impersonating, 403)
    finally:
        await dev_env.client.get_workflow_handle(case_id).terminate("test finished")


async def test_decisions_take_identity_and_roles_from_the_token(
    http: httpx.AsyncClient,
) -> None:
    case = f"/cases/refund-{uuid.uuid4().hex}/approve"
    lead = bearer("lead@example.com", ["team_lead"])
    # Checked before the case is looked at: another approver, or roles the token lacks.
    someone_else = await http.post(case, json={"approver": "boss@example.com"}, headers=lead)
    assert "is not the caller" in assert_problem(someone_else, 403)["detail"]
    as_finance = await http.post(case, json={"roles": ["finance"]}, headers=lead)
    assert "may not decide as finance" in assert_problem(as_finance, 403)["detail"]
    # The caller itself, in its own role: on to the case (which does not exist).
    own = await http.post(
        case, json={"approver": "lead@example.com", "roles": ["team_lead"]}, headers=lead
    )
    assert_problem(own, 404)


def test_cli_sends_the_token_and_mints_development_ones(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    cli = create_cli(httpx.MockTransport(handle))
    runner = CliRunner()
    assert 0 == runner.invoke(cli, ["pending"], env={"PODIUM_TOKEN": "tok-1"}).exit_code
    assert 0 == runner.invoke(cli, ["--token", "tok-2", "pending"]).exit_code
    assert ["Bearer tok-1", "Bearer tok-2"] == [r.headers["authorization"] for r in seen]

    env = {"PODIUM_JWT_SECRET": TEST_JWT_SECRET, "PODIUM_DATA_DIR": str(tmp_path)}
    minted = runner.invoke(
        cli, ["token", "--role", "team_lead", "--sub", "lead@example.com"], env=env
    )
    assert 0 == minted.exit_code, minted.output
    claims = jwt.decode(minted.stdout.strip(), TEST_JWT_SECRET, algorithms=["HS256"])
    assert ("lead@example.com", ["team_lead"]) == (claims["sub"], claims["roles"])
    assert 29 * 86_400 < claims["exp"] - time.time() <= 30 * 86_400

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwt-secret").write_text("file-secret-0123456789-0123456789-abcdef\n")
    from_file = runner.invoke(
        cli,
        ["token", "--role", "finance", "--sub", "fin@example.com"],
        env={"PODIUM_JWT_SECRET": "", "PODIUM_DATA_DIR": str(tmp_path)},
    )
    assert 0 == from_file.exit_code, from_file.output
    decoded = jwt.decode(
        from_file.stdout.strip(),
        "file-secret-0123456789-0123456789-abcdef",
        algorithms=["HS256"],
    )
    assert "fin@example.com" == decoded["sub"]


# --- end to end: the real refund workflow ---------------------------------------------------------

HIGH_RISK_MESSAGE = "My order O-5004 is late and still not here. I want a refund please."


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, tmp_path: Path, models: EmbeddedModels
) -> AsyncIterator[ApprovalsStack]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_decisions_are_attributed_to_the_token_subject(stack: ApprovalsStack) -> None:
    lead = bearer("lead@example.com", ["team_lead"])
    lead2 = bearer("lead2@example.com", ["team_lead"])
    finance = bearer("finance@example.com", ["finance"])
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        created = await http.post(
            "/cases/refund",
            json=refund_body(order_id="O-5004", message=HIGH_RISK_MESSAGE),
            headers=bearer("intake@example.com", ["service"]),
        )
        assert 201 == created.status_code, created.text
        case_id = created.json()["case_id"]
        stack.started.append(case_id)
        approve = f"/cases/{case_id}/approve"

        async def waiting() -> dict[str, Any]:
            response = await http.get(f"/approvals/{case_id}", headers=lead)
            return response.json() if response.status_code == 200 else {}

        view = await eventually(waiting, lambda v: v.get("request", {}).get("level") == 1)
        assert "intake@example.com" == view["request"]["requested_by"]

        # The body cannot speak for someone else; finance may not decide at the team lead level.
        spoofed = await http.post(approve, json={"approver": "ceo@example.com"}, headers=lead)
        assert_problem(spoofed, 403)
        too_early = await http.post(approve, json={}, headers=finance)
        assert "level 'team_lead'" in assert_problem(too_early, 403)["detail"]
        nobody = await http.post(approve, json={}, headers=bearer("ann@example.com", ["agent"]))
        assert_problem(nobody, 403)

        first = await http.post(approve, json={"comment": "photos ok"}, headers=lead)
        assert 200 == first.status_code, first.text
        assert ("lead@example.com", "open", ["finance"]) == (
            first.json()["approver"],
            first.json()["gate"],
            first.json()["waiting_for"],
        )
        # Another team lead at the finance level: refused, for lack of the role.
        at_finance = await http.post(approve, json={}, headers=lead2)
        assert "level 'finance'" in assert_problem(at_finance, 403)["detail"]

        second = await http.post(approve, json={}, headers=finance)
        assert 200 == second.status_code, second.text
        assert ("finance@example.com", "approved") == (
            second.json()["approver"],
            second.json()["outcome"],
        )

        async def case() -> dict[str, Any]:
            return (await http.get(f"/cases/{case_id}", headers=finance)).json()  # type: ignore[no-any-return]

        final = await eventually(case, lambda c: c["workflow_status"] != "running")
        assert ("completed", "approved", "finance@example.com") == (
            final["workflow_status"],
            final["outcome"],
            final["state"]["decision"]["approver"],
        )
        decisions = [
            (d["approver"], d["level_name"]) for d in final["state"]["approval"]["decisions"]
        ]
        assert [("lead@example.com", "team_lead"), ("finance@example.com", "finance")] == (
            decisions
        )

    with Session(stack.engine) as session:
        actors = {
            (event.action, event.actor)
            for event in session.exec(select(AuditEvent).where(AuditEvent.case_id == case_id))
        }
    assert ("case_closed", "finance@example.com") in actors, actors
    people = {actor for _, actor in actors if "@" in actor}
    assert {"lead@example.com", "finance@example.com"} <= people
    assert not people & {"ceo@example.com", "lead2@example.com", "ann@example.com"}


async def test_inbox_defaults_to_the_callers_role(dev_env: WorkflowEnvironment) -> None:
    async with api(dev_env, make_settings()) as (_, http):
        http.auth = AsCaller("fin@example.com", ["finance"])
        response = await http.get("/approvals")
        assert 200 == response.status_code, response.text
        listing = response.json()
        assert ("finance", "fin@example.com") == (listing["role"], listing["approver"])
