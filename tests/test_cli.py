# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""The `podium` CLI: against a mocked API for output and errors, and once against the real stack.

The end-to-end test serves the real app with uvicorn on a loopback port, backed by the dev server
and a worker running the stand-in refund workflow from `tests.test_api`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import types
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

import httpx
import pytest
import structlog
import structlog.testing
import uvicorn
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from typer.testing import CliRunner

from core.admission import AdmissionInterceptor
from core.settings import Settings
from starter.api import create_app
from starter.cli import create_cli
from tests.auth_helpers import TEST_JWT_SECRET, token
from tests.test_api import StandInRefundWorkflow

Handler = Callable[[httpx.Request], httpx.Response]

CASE_ID = "refund-k1"
UI_URL = "http://localhost:8233/namespaces/default/workflows/refund-k1"


class RecordingApi:
    """An httpx MockTransport that answers from a table and remembers what it was asked."""

    def __init__(self, answer: Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._answer = answer
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._answer(request)

    def run(self, *args: str, env: dict[str, str] | None = None) -> Any:
        runner = CliRunner()
        return runner.invoke(create_cli(self.transport), list(args), env=env)


def problem(status: int, title: str, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- opening a case -----------------------------------------------------------------------------


def test_refund_json_sends_the_request_and_prints_the_answer() -> None:
    answer = {"case_id": CASE_ID, "created": True, "ui_url": UI_URL}
    api = RecordingApi(lambda request: httpx.Response(201, json=answer))
    result = api.run(
        "refund",
        "--customer", "C-1002",
        "--order", "O-5004",
        "--message", "Broken on arrival",
        "--channel", "email",
        "--key", "k1",
        "--json",
    )  # fmt: skip
    assert 0 == result.exit_code, result.output
    assert answer == json.loads(result.stdout)
    [request] = api.requests
    assert ("POST", "/cases/refund") == (request.method, request.url.path)
    assert "k1" == request.headers["idempotency-key"]
    expected = {
        "channel": "email",
        "customer_id": "C-1002",
        "order_id": "O-5004",
        "message": "Broken on arrival",
    }
    assert expected == json.loads(request.content)


def test_refund_human_output_says_created_or_existing_with_the_ui_link() -> None:
    created = {"case_id": CASE_ID, "created": True, "ui_url": UI_URL}
    api = RecordingApi(lambda request: httpx.Response(201, json=created))
    result = api.run("refund", "--customer", "C-1002", "--message", "refund please")
    assert 0 == result.exit_code, result.output
    assert f"Created case {CASE_ID}" in result.stdout
    assert UI_URL in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colors
    assert "idempotency-key" not in api.requests[0].headers
    assert "web" == json.loads(api.requests[0].content)["channel"]

    existing = {**created, "created": False}
    api = RecordingApi(lambda request: httpx.Response(200, json=existing))
    result = api.run("refund", "--customer", "C-1002", "--message", "x", "--key", "k1")
    assert 0 == result.exit_code
    assert f"Case {CASE_ID} already exists" in result.stdout


def test_api_url_comes_from_the_environment() -> None:
    api = RecordingApi(lambda request: httpx.Response(200, json=[]))
    result = api.run("pending", env={"PODIUM_API_URL": "http://podium.internal:9000/"})
    assert 0 == result.exit_code, result.output
    assert "http://podium.internal:9000/approvals/pending?limit=100" == str(api.requests[0].url)


# --- reading ------------------------------------------------------------------------------------


def case_view(now: datetime) -> dict[str, Any]:
    return {
        "case_id": CASE_ID,
        "workflow_status": "running",
        "status": "awaiting_approval",
        "outcome": None,
        "started_at": iso(now - timedelta(minutes=5)),
        "closed_at": None,
        "summary": "Refund request from C-1002 for order O-5004 via email",
        "state": {
            "case_id": CASE_ID,
            "status": "awaiting_approval",
            "customer_id": "C-1002",
            "order_id": "O-5004",
            "customer_tier": "gold",
            "intent": "refund_request",
            "intent_confidence": 0.91,
            "amount_cents": 12_000,
            "approval": {
                "request_id": "req-1",
                "requested_at": iso(now),
                "sla_due_at": iso(now + timedelta(hours=3, minutes=30)),
                "deadline_at": iso(now + timedelta(days=7)),
                "recommendation": "approve",
                "reasons": ["over the automatic refund limit"],
                "escalated": False,
            },
            "decision": None,
            "notes": [],
        },
        "result": None,
        "ui_url": UI_URL,
    }


def test_status_prints_the_case_for_people_and_for_machines() -> None:
    view = case_view(datetime.now(UTC))
    api = RecordingApi(lambda request: httpx.Response(200, json=view))

    as_json = api.run("status", CASE_ID, "--json")
    assert 0 == as_json.exit_code, as_json.output
    assert view == json.loads(as_json.stdout)

    human = api.run("status", CASE_ID)
    assert 0 == human.exit_code, human.output
    assert "awaiting_approval" in human.stdout
    assert "C-1002 (gold)" in human.stdout
    assert "$120.00" in human.stdout
    assert "pending (request req-1)" in human.stdout
    assert "SLA 3h 2" in human.stdout  # 3h 29m or 3h 30m left, depending on the clock
    assert "over the automatic refund limit" in human.stdout
    assert f"/cases/{CASE_ID}" == api.requests[0].url.path


def test_pending_prints_a_table_with_time_left() -> None:
    now = datetime.now(UTC)
    items = [
        {
            "case_id": "refund-late",
            "customer_id": "C-1",
            "tier": "gold",
            "intent": "refund_request",
            "amount": 250.0,
            "sla_due_at": iso(now - timedelta(hours=2, minutes=5)),
            "escalated": True,
            "started_at": iso(now - timedelta(days=3)),
        },
        {
            "case_id": "refund-soon",
            "customer_id": "C-2",
            "tier": None,
            "intent": None,
            "amount": 1_234.5,
            "sla_due_at": iso(now + timedelta(days=1, hours=1, minutes=1)),
            "escalated": False,
            "started_at": iso(now),
        },
    ]
    api = RecordingApi(lambda request: httpx.Response(200, json=items))

    result = api.run("pending", "--min-amount", "100")
    assert 0 == result.exit_code, result.output
    header, late, soon = result.stdout.splitlines()
    assert header.split()[:5] == ["CASE", "CUSTOMER", "TIER", "INTENT", "AMOUNT"]
    assert late.startswith("refund-late")
    assert "overdue 2h 0" in late
    assert "yes" in late
    assert "$1,234.50" in soon
    assert "1d 1h" in soon
    assert "100.0" == api.requests[0].url.params["min_amount"]

    as_json = api.run("pending", "--json")
    assert items == json.loads(as_json.stdout)


def test_pending_says_so_when_nothing_waits() -> None:
    api = RecordingApi(lambda request: httpx.Response(200, json=[]))
    result = api.run("pending")
    assert 0 == result.exit_code
    assert "No cases are waiting for approval." == result.stdout.strip()


# --- deciding -----------------------------------------------------------------------------------


def decision(approved: bool, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": "req-1",
        "decision_id": "d-1",
        "action": "approve" if approved else "reject",
        "approved": approved,
        "approver": "alice" if approved else "bob",
        "decided_at": iso(datetime.now(UTC)),
        "level": 1,
        "level_name": "team_lead",
        "gate": "approved" if approved else "rejected",
        "waiting_for": [],
        "amount_cents": 12_000,
        "outcome": "approved" if approved else "rejected",
        "effects": {"refund_id": "R-1"} if approved else {},
        **extra,
    }


def test_approve_and_reject_send_the_decision() -> None:
    api = RecordingApi(
        lambda request: httpx.Response(200, json=decision(request.url.path.endswith("/approve")))
    )
    approved = api.run(
        "approve",
        CASE_ID,
        "--approver",
        "alice",
        "--role",
        "team_lead",
        "--decision-id",
        "d-1",
        "--json",
    )
    assert 0 == approved.exit_code, approved.output
    assert "approved" == json.loads(approved.stdout)["outcome"]

    rejected = api.run(
        "reject",
        CASE_ID,
        "--approver",
        "bob",
        "--role",
        "team_lead",
        "--role",
        "finance",
        "--reason",
        "late",
        "--request-id",
        "req-1",
    )
    assert 0 == rejected.exit_code, rejected.output
    assert f"{CASE_ID}: rejected by bob (request req-1); outcome rejected" in rejected.stdout

    first, second = api.requests
    assert f"/cases/{CASE_ID}/approve" == first.url.path
    assert {
        "approver": "alice",
        "roles": ["team_lead"],
        "comment": None,
        "request_id": None,
        "decision_id": "d-1",
    } == json.loads(first.content)
    assert f"/cases/{CASE_ID}/reject" == second.url.path
    assert {
        "approver": "bob",
        "roles": ["team_lead", "finance"],
        "comment": None,
        "request_id": "req-1",
        "decision_id": None,
        "reason": "late",
    } == json.loads(second.content)


def test_reject_needs_a_reason() -> None:
    api = RecordingApi(lambda request: httpx.Response(200, json=decision(False)))
    result = api.run("reject", CASE_ID, "--approver", "bob", "--role", "team_lead")
    assert 0 != result.exit_code
    assert "--reason" in result.stderr
    assert [] == api.requests


def test_request_changes_and_delegate_send_their_fields() -> None:
    answers = {
        "request-changes": decision(True, action="request_changes", amount_cents=12_000),
        "delegate": decision(
            False,
            action="delegate",
            approver="alice",
            gate="open",
            outcome=None,
            effects={},
            waiting_for=["team_lead", "user:bob"],
        ),
    }
    api = RecordingApi(
        lambda request: httpx.Response(200, json=answers[request.url.path.rsplit("/", 1)[1]])
    )
    changed = api.run(
        "request-changes",
        CASE_ID,
        "--approver",
        "alice",
        "--role",
        "team_lead",
        "--amount",
        "120.00",
        "--reason",
        "partly used",
    )
    assert 0 == changed.exit_code, changed.output
    assert f"{CASE_ID}: approved $120.00 by alice (request req-1); outcome approved" in (
        changed.stdout
    )
    delegated = api.run(
        "delegate",
        CASE_ID,
        "--approver",
        "alice",
        "--role",
        "team_lead",
        "--to",
        "bob",
        "--reason",
        "on leave",
    )
    assert 0 == delegated.exit_code, delegated.output
    assert (
        f"{CASE_ID}: delegated by alice (request req-1) at level team_lead; "
        "waiting for team_lead, user:bob"
    ) in delegated.stdout

    first, second = api.requests
    assert f"/cases/{CASE_ID}/request-changes" == first.url.path
    assert {"amount": "120.00", "reason": "partly used", "roles": ["team_lead"]}.items() <= (
        json.loads(first.content).items()
    )
    assert f"/cases/{CASE_ID}/delegate" == second.url.path
    assert {"to": "bob", "reason": "on leave", "approver": "alice"}.items() <= (
        json.loads(second.content).items()
    )


def test_delegate_needs_to_and_reason() -> None:
    api = RecordingApi(lambda request: httpx.Response(200, json=decision(True)))
    result = api.run("delegate", CASE_ID, "--approver", "alice", "--reason", "x")
    assert 0 != result.exit_code
    assert "--to" in result.stderr
    assert [] == api.requests


# --- entering a verification code ---------------------------------------------------------------


def test_verify_asks_for_the_code_without_echoing_it_and_says_what_the_case_answered() -> None:
    answers = iter(
        [
            {"case_id": "password_reset-k1", "outcome": "wrong_code", "verified": False,
             "attempts": 1, "attempts_left": 2, "status": "awaiting_code"},
            {"case_id": "password_reset-k1", "outcome": "verified", "verified": True,
             "attempts": 1, "attempts_left": 2, "status": "awaiting_code"},
        ]
    )  # fmt: skip
    api = RecordingApi(lambda request: httpx.Response(200, json=next(answers)))
    wrong = CliRunner().invoke(
        create_cli(api.transport), ["verify", "password_reset-k1"], input="654321\n"
    )
    assert 1 == wrong.exit_code, wrong.output
    assert "654321" not in wrong.output  # the prompt does not echo it
    assert "Wrong code: 2 more wrong code(s) lock the case" in wrong.stdout
    right = api.run("verify", "password_reset-k1", "--code", " 123456 ")
    assert 0 == right.exit_code, right.output
    assert "Verified: case password_reset-k1 goes on" in right.stdout
    sent = [(r.method, r.url.path, json.loads(r.content)) for r in api.requests]
    assert [
        ("POST", "/cases/password_reset-k1/verification-code", {"code": "654321"}),
        ("POST", "/cases/password_reset-k1/verification-code", {"code": "123456"}),
    ] == sent


def test_verify_prints_the_problem_of_a_locked_case() -> None:
    api = RecordingApi(
        lambda request: problem(409, "Verification locked", "case 'x' is locked after too many")
    )
    result = api.run("verify", "password_reset-k1", "--code", "123456")
    assert 1 == result.exit_code
    assert "error: Verification locked: case 'x' is locked after too many\n" == result.stderr


# --- errors -------------------------------------------------------------------------------------


def test_api_problem_prints_title_and_detail_and_exits_1() -> None:
    api = RecordingApi(
        lambda request: problem(409, "Decision refused", "unknown or stale request_id 'req-0'")
    )
    result = api.run("approve", CASE_ID, "--approver", "alice", "--json")
    assert 1 == result.exit_code
    assert "error: Decision refused: unknown or stale request_id 'req-0'\n" == result.stderr
    assert "" == result.stdout


def test_validation_problem_lists_the_fields() -> None:
    errors = [
        {"field": "customer_id", "location": "body", "message": "too short", "type": "x"},
        {"field": "Idempotency-Key", "location": "header", "message": "bad key", "type": "y"},
    ]
    api = RecordingApi(lambda request: problem(422, "Invalid request", "...", errors=errors))
    result = api.run("refund", "--customer", " ", "--message", "m", "--key", "a b")
    assert 1 == result.exit_code
    assert result.stderr.splitlines() == [
        "error: Invalid request",
        "  customer_id: too short",
        "  Idempotency-Key: bad key",
    ]


def test_non_problem_error_is_still_readable() -> None:
    api = RecordingApi(lambda request: httpx.Response(502, text="upstream went away"))
    result = api.run("status", CASE_ID)
    assert 1 == result.exit_code
    assert "error: HTTP 502: upstream went away\n" == result.stderr


def test_unreachable_api_hints_at_make_up_and_exits_2() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = CliRunner().invoke(
        create_cli(), ["--api-url", f"http://127.0.0.1:{port}", "status", CASE_ID]
    )
    assert 2 == result.exit_code
    assert "is `make up` running?" in result.stderr
    assert f"127.0.0.1:{port}" in result.stderr


def test_up_runs_the_local_stack_with_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Settings] = []
    runtime = types.ModuleType("starter.runtime")
    runtime.run = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "starter.runtime", runtime)
    monkeypatch.setenv("PODIUM_TASK_QUEUE", "from-env")
    result = CliRunner().invoke(create_cli(), ["up"])
    assert 0 == result.exit_code, result.output
    assert ["from-env"] == [settings.task_queue for settings in calls]


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Serve an ASGI app with uvicorn on a loopback port, in a thread; returns its base URL."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(app: Any) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not server.started:
            assert datetime.now(UTC) < deadline, "uvicorn did not start"
            threading.Event().wait(0.05)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def stack(
    dev_env: WorkflowEnvironment, serve: Callable[[Any], str]
) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """The real API over HTTP, a worker with the stand-in workflow behind it, and its log."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"test-{uuid.uuid4()}",
        jwt_secret=TEST_JWT_SECRET,
    )
    target = dev_env.client.service_client.config.target_host

    async def connect_in_server_loop(_: Settings) -> Client:
        # The server thread runs its own event loop: give it its own client.
        return await Client.connect(
            target, data_converter=pydantic_data_converter, interceptors=[AdmissionInterceptor()]
        )

    # Captured, because CliRunner swaps the process-wide stdout the server would log to.
    with structlog.testing.capture_logs() as logs:
        async with Worker(
            dev_env.client, task_queue=settings.task_queue, workflows=[StandInRefundWorkflow]
        ):
            yield serve(create_app(settings, connect_in_server_loop)), logs


@pytest.mark.e2e
async def test_cli_end_to_end_against_the_real_api(
    stack: tuple[str, list[dict[str, Any]]],
) -> None:
    api_url, logs = stack

    service = token("intake", ["service"])

    async def podium(*args: str, as_: str = service) -> Any:
        # The worker runs on this event loop: keep it free while the CLI blocks.
        cli = create_cli()
        return await asyncio.to_thread(
            CliRunner().invoke, cli, ["--api-url", api_url, "--token", as_, *args]
        )

    unauthenticated = await asyncio.to_thread(
        CliRunner().invoke, create_cli(), ["--api-url", api_url, "status", "refund-x"]
    )
    assert 1 == unauthenticated.exit_code
    assert unauthenticated.stderr.startswith("error: Unauthorized: ")

    key = f"e2e-{uuid.uuid4().hex}"
    request = ["--customer", "C-1002", "--order", "O-12000", "--message", "broken", "--key", key]
    opened = await podium("refund", *request, "--json")
    assert 0 == opened.exit_code, opened.output
    ref = json.loads(opened.stdout)
    assert {"case_id": f"refund-{key}", "created": True}.items() <= ref.items()

    again = await podium("refund", *request)
    assert 0 == again.exit_code, again.output
    assert "already exists" in again.stdout

    conflict = await podium("refund", "--customer", "C-9", "--message", "other", "--key", key)
    assert 1 == conflict.exit_code
    assert conflict.stderr.startswith("error: Idempotency key reused: ")

    status = await podium("status", ref["case_id"], "--json")
    assert 0 == status.exit_code, status.output
    assert "awaiting_approval" == json.loads(status.stdout)["status"]

    for _ in range(75):  # visibility is eventually consistent
        pending = await podium("pending", "--json")
        assert 0 == pending.exit_code, pending.output
        if ref["case_id"] in [item["case_id"] for item in json.loads(pending.stdout)]:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the case never showed up as pending")

    wrong = await podium("approve", ref["case_id"], as_=token("alice", ["agent"]))
    assert 1 == wrong.exit_code
    assert wrong.stderr.startswith("error: Forbidden: ")

    alice = token("alice", ["team_lead"])
    impostor = await podium("approve", ref["case_id"], "--approver", "bob", as_=alice)
    assert 1 == impostor.exit_code
    assert "is not the caller" in impostor.stderr

    approved = await podium(
        "approve", ref["case_id"], "--approver", "alice", "--role", "team_lead", "--json", as_=alice
    )
    assert 0 == approved.exit_code, approved.output
    assert ("approved", "alice") == itemgetter("outcome", "approver")(json.loads(approved.stdout))

    closed = await podium(
        "reject", ref["case_id"], "--reason", "too late", as_=token("bob", ["team_lead"])
    )
    assert 1 == closed.exit_code
    assert closed.stderr.startswith("error: Case closed: ")

    unknown = await podium("status", f"refund-{uuid.uuid4().hex}")
    assert 1 == unknown.exit_code
    assert unknown.stderr.startswith("error: Case not found: ")

    started = [entry for entry in logs if entry["event"] == "case_started"]
    assert [ref["case_id"]] == [entry["case_id"] for entry in started]
    assert "decision_applied" in [entry["event"] for entry in logs]
