# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""The API's edges under attack and failure (issue 9): each test reproduces a defect found by
the hostile-request and chaos runs.

- the API process configures logging itself: JSON when asked, personal data masked;
- bodies are refused before they are read: 401 without a credential, 413 over the limit (by
  Content-Length and by counting streamed bytes), measured on a real uvicorn over loopback;
- an unparseable body and duplicate JSON keys are declared 422 problems;
- text without a visible character (a lone NUL) opens no case;
- approver comments are masked in the audit trail, whose chain still verifies;
- an email as customer id never becomes a plaintext search attribute;
- a decision that timed out (503) names the decision id to retry with, and the retry returns
  the first result.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow

from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalAction,
    ApprovalDecisionInput,
    ApprovalDecisionRecord,
    ApprovalDecisionResult,
    ApprovalRequest,
    GateStatus,
)
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RiskLevel,
)

with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    from pydantic import ValidationError
    from sqlmodel import Session, select
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    import starter.client
    from core.audit_chain import AuditRecord, append_event, verify_chain
    from core.db import AuditEvent, create_tables, make_engine
    from core.settings import Settings
    from starter.api import create_app
    from tests.auth_helpers import TEST_JWT_SECRET, AsCaller, bearer
    from workflows.agent_assist.starting import AgentAssistRequest
    from workflows.contracts.documents import MAX_ATTACHMENT_BYTES
    from workflows.refund.starting import RefundRequest

PROBLEM = "application/problem+json"
API_KEY = "pk_hardening_test_key_0123456789"  # for tests only
EMAIL = "jane.doe@example.com"
ADMIN = bearer("tester@example.com", ["admin"])
MiB = 1024 * 1024
BIG_BODY = 50 * MiB
# Generous: a body read into memory costs at least its own size (and FastAPI joins its chunks).
RSS_GROWTH_BOUND = 24 * MiB


# --- helpers ------------------------------------------------------------------------------------


def make_settings(**overrides: Any) -> Settings:
    overrides.setdefault("task_queue", f"test-{uuid.uuid4()}")
    overrides.setdefault("jwt_secret", TEST_JWT_SECRET)
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def api(
    env: WorkflowEnvironment, settings: Settings | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    async def factory(_: Settings) -> Client:
        return env.client

    app = create_app(settings or make_settings(), factory)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://podium.test",
            auth=AsCaller(),
        ) as http,
    ):
        yield http


def refund_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "email",
        "customer_id": "C-1002",
        "order_id": "O-12000",
        "message": "The blender arrived broken. I want my money back.",
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert status == problem["status"]
    assert "Traceback" not in response.text
    return problem


async def assert_not_started(env: WorkflowEnvironment, case_id: str) -> None:
    with pytest.raises(RPCError) as caught:
        await env.client.get_workflow_handle(case_id).describe()
    assert RPCStatusCode.NOT_FOUND == caught.value.status


# --- a real API process on loopback -------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak so far) of a process, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


@dataclass
class ApiProcess:
    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory(self) -> dict[str, int]:
        return _memory_kib(self.process.pid)

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


@asynccontextmanager
async def api_process(tmp_path: Path, **env: str) -> AsyncIterator[ApiProcess]:
    """`uvicorn starter.api:app`, the API's real entry, configured through its environment."""
    port = _free_port()
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("PODIUM_", "TEMPORAL_"))
    }
    environment.update(
        {
            "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
            "PODIUM_DATA_DIR": str(tmp_path / "var"),
            "PODIUM_ENCRYPTION": "off",
            "PODIUM_JWT_SECRET": TEST_JWT_SECRET,
            "PODIUM_API_KEYS": f"hardening:{API_KEY}:service",
            # Nothing listens there: the API connects lazily, these tests need no Temporal.
            "TEMPORAL_ADDRESS": "127.0.0.1:1",
            **env,
        }
    )
    stdout, stderr = tmp_path / "api.out", tmp_path / "api.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        command = [sys.executable, "-m", "uvicorn", "starter.api:app", "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "warning"],
            cwd=tmp_path,
            env=environment,
            stdout=out,
            stderr=err,
        )
    running = ApiProcess(process, port, stdout, stderr)
    try:
        async with asyncio.timeout(90), httpx.AsyncClient(base_url=running.url) as http:
            while True:
                assert process.poll() is None, running.logs()
                try:
                    if (await http.get("/openapi.json")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int

    def json(self) -> Any:
        return json.loads(self.body)


async def post_raw(
    port: int,
    path: str,
    *,
    size: int,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
    declared_length: int | None = None,
    send_body: bool = True,
) -> RawResponse:
    """POST `size` bytes over a plain socket, streaming them while the answer is awaited (the
    server may answer before it has any of them), then the rest of them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {declared_length if declared_length else size}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0

    async def pump() -> None:
        nonlocal sent
        block = b'{"message":"' + b"a" * (64 * 1024 - 12)
        try:
            while sent < size:
                data = block[: min(len(block), size - sent)]
                writer.write(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                await writer.drain()
                sent += len(data)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server answered and hung up: what a refusal should do

    pumping = asyncio.create_task(pump()) if send_body else None
    try:
        async with asyncio.timeout(60):
            status_line = await reader.readline()
            assert status_line, "the server closed the connection without answering"
            response_headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                response_headers[name.strip().lower()] = value.strip()
            length = int(response_headers.get("content-length", "0"))
            body = await reader.readexactly(length)
        if pumping is not None:
            # The rest of the body too: what a refused body costs the server, all of it.
            async with asyncio.timeout(120):
                await pumping
    finally:
        if pumping is not None:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
        writer.close()
    return RawResponse(int(status_line.split()[1]), response_headers, body, sent)


# --- 1. the API's own logs ----------------------------------------------------------------------


async def test_api_process_logs_json_lines_with_personal_data_masked(tmp_path: Path) -> None:
    async with api_process(tmp_path, PODIUM_LOG_JSON="true") as running:
        async with httpx.AsyncClient(base_url=running.url) as http:
            # Temporal is unreachable: refused with 503, logged with the path (an email in it).
            response = await http.get(f"/cases/{EMAIL}", headers={"X-API-Key": API_KEY})
        assert 503 == response.status_code, response.text
    logs = running.logs()
    assert EMAIL not in logs
    lines = [json.loads(line) for line in running.stderr.read_text().splitlines() if line]
    events = {line["event"]: line for line in lines}
    assert "api_started" in events
    refused = events["api_request_refused"]
    assert "/cases/j***@example.com" == refused["path"]
    assert "info" == refused["level"]


# --- 2. request size, and authentication before the body ----------------------------------------


async def test_big_bodies_are_refused_before_they_are_read(tmp_path: Path) -> None:
    limit = 4 * MiB
    async with api_process(tmp_path, PODIUM_API_MAX_BODY_BYTES=str(limit)) as running:
        # Warm up one authenticated request: what every request costs is not what we measure.
        async with httpx.AsyncClient(base_url=running.url) as http:
            warm = await http.get("/processes", headers={"X-API-Key": API_KEY})
            assert 200 == warm.status_code, warm.text
        before = running.memory()

        # No credential: refused at once, whatever the body.
        anonymous = await post_raw(running.port, "/cases/refund", size=BIG_BODY)
        after_anonymous = running.memory()
        assert 401 == anonymous.status, anonymous.body
        assert anonymous.headers["content-type"].startswith(PROBLEM)
        assert "Bearer" == anonymous.headers["www-authenticate"]
        assert "unauthorized" in anonymous.json()["type"]

        # A credential, a streamed body without Content-Length: counted, refused past the limit.
        streamed = await post_raw(
            running.port,
            "/cases/refund",
            size=BIG_BODY,
            chunked=True,
            headers={"X-API-Key": API_KEY},
        )
        after_streamed = running.memory()
        assert 413 == streamed.status, streamed.body
        assert streamed.headers["content-type"].startswith(PROBLEM)
        assert "content-too-large" in streamed.json()["type"]

        # A declared Content-Length over the limit: refused before a byte of the body is sent.
        declared = await post_raw(
            running.port,
            "/documents",
            size=0,
            declared_length=BIG_BODY,
            send_body=False,
            headers={"X-API-Key": API_KEY},
        )
        assert 413 == declared.status, declared.body
        assert str(limit) in declared.json()["detail"]

    growth_anonymous = (after_anonymous["VmHWM"] - before["VmRSS"]) * 1024
    growth_streamed = (after_streamed["VmHWM"] - before["VmRSS"]) * 1024
    print(
        f"\nRSS before {before['VmRSS'] / 1024:.1f} MiB; peak growth: unauthenticated 50 MB "
        f"{growth_anonymous / MiB:.1f} MiB (client sent {anonymous.sent / MiB:.1f} MiB), "
        f"streamed 50 MB over a 4 MiB limit {growth_streamed / MiB:.1f} MiB "
        f"(client sent {streamed.sent / MiB:.1f} MiB)"
    )
    assert growth_anonymous < RSS_GROWTH_BOUND
    assert growth_streamed < RSS_GROWTH_BOUND


async def test_bodies_within_the_limit_pass(dev_env: WorkflowEnvironment) -> None:
    # A 10 MB receipt is ~14 MB of base64 in JSON: under the default limit, it reaches the route
    # (which refuses it for what it is, not for its size).
    async with api(dev_env) as http:
        # The longest base64 a 10 MB image takes; zeros, so not an image.
        largest = (MAX_ATTACHMENT_BYTES + 2) // 3 * 4
        response = await http.post(
            "/documents", json={"content_type": "image/png", "data_base64": "A" * largest}
        )
    assert 413 != response.status_code
    assert 422 == response.status_code, response.text[:500]


async def test_openapi_declares_the_refusals(dev_env: WorkflowEnvironment) -> None:
    async with api(dev_env) as http:
        spec = (await http.get("/openapi.json")).json()
    for path, method in (("/cases/refund", "post"), ("/documents", "post")):
        responses = spec["paths"][path][method]["responses"]
        for status in ("401", "413", "422"):
            assert PROBLEM in responses[status]["content"], (path, status)


async def test_anonymous_callers_get_401_on_every_path_but_the_public_ones(
    dev_env: WorkflowEnvironment,
) -> None:
    async with api(dev_env) as http:
        for path in ("/cases/refund-x", "/no-such-route", "/approvals"):
            refused = await http.get(path, auth=None)
            assert "unauthorized" in assert_problem(refused, 401)["type"], path
        for path in ("/healthz", "/openapi.json", "/docs", "/static/inbox.js"):
            assert 200 == (await http.get(path, auth=None)).status_code, path
        # Past authentication, an unknown path is what it is.
        assert_problem(await http.get("/no-such-route"), 404)


# --- 3. unparseable bodies ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{\x00", b"[" * 100_000, b'{"message": "\xc3\x28"}', b"{not json"],
    ids=["utf16-bom-garbage", "deeply-nested", "invalid-utf8", "not-json"],
)
async def test_unparseable_body_is_a_422_problem(dev_env: WorkflowEnvironment, raw: bytes) -> None:
    key = f"test-{uuid.uuid4().hex}"
    async with api(dev_env) as http:
        response = await http.post(
            "/cases/refund",
            content=raw,
            # Not AsCaller, which reads the body to pick who signs in.
            headers={"content-type": "application/json", "Idempotency-Key": key, **ADMIN},
            auth=None,
        )
    problem = assert_problem(response, 422)
    assert ["body"] == [error["location"] for error in problem["errors"]]
    await assert_not_started(dev_env, f"refund-{key}")


# --- 4. duplicate keys --------------------------------------------------------------------------


async def test_duplicate_json_keys_are_refused_naming_the_key(
    dev_env: WorkflowEnvironment,
) -> None:
    key = f"test-{uuid.uuid4().hex}"
    raw = (
        b'{"channel": "email", "customer_id": "C-1001", "message": "Broken blender",'
        b' "customer_id": "C-1002"}'
    )
    async with api(dev_env) as http:
        response = await http.post(
            "/cases/refund",
            content=raw,
            headers={"content-type": "application/json", "Idempotency-Key": key},
        )
        nested = await http.post(
            "/cases/agent_assist",
            content=b'{"customer_id": "C-1", "message": "hi", "limits": {"a": 1, "a": 2}}',
            headers={"content-type": "application/json"},
        )
    problem = assert_problem(response, 422)
    assert "customer_id" in problem["detail"]
    assert ["customer_id"] == [error["field"] for error in problem["errors"]]
    assert "a" in [error["field"] for error in assert_problem(nested, 422)["errors"]]
    await assert_not_started(dev_env, f"refund-{key}")


# --- 5. text without a visible character --------------------------------------------------------


BLANK_TEXTS = ["\x00", " \x00 ", "\t\r\n", "\u200b\u00a0", "\x1b[2J"]


@pytest.mark.parametrize("text", BLANK_TEXTS)
def test_request_models_refuse_text_without_a_visible_character(text: str) -> None:
    with pytest.raises(ValidationError):
        RefundRequest(customer_id="C-1", message=text)
    with pytest.raises(ValidationError):
        AgentAssistRequest(customer_id="C-1", message=text)
    with pytest.raises(ValidationError):
        RefundRequest(customer_id=text, message="hello")


def test_request_models_refuse_control_characters_inside_text() -> None:
    with pytest.raises(ValidationError):
        RefundRequest(customer_id="C-1", message="refund\x00 please")
    # Tabs and line breaks are text.
    request = RefundRequest(customer_id="C-1", message="line one\n\tline two\r\n")
    assert "line one\n\tline two" == request.message


async def test_a_nul_message_opens_no_case(dev_env: WorkflowEnvironment) -> None:
    key = f"test-{uuid.uuid4().hex}"
    async with api(dev_env) as http:
        response = await http.post(
            "/cases/refund", json=refund_body(message="\x00"), headers={"Idempotency-Key": key}
        )
    problem = assert_problem(response, 422)
    assert ["message"] == [error["field"] for error in problem["errors"]]
    await assert_not_started(dev_env, f"refund-{key}")


# --- 6. the audit trail -------------------------------------------------------------------------


def test_audit_details_are_masked_and_the_chain_verifies(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    comment = f"Called {EMAIL} on +1 415 555 2671; card 4242 4242 4242 4242. Order O-5004."
    append_event(
        engine,
        AuditRecord(
            idempotency_key=f"k-{uuid.uuid4().hex}",
            case_id="refund-1",
            process="refund",
            action="approval_decided",
            actor="lead@example.com",
            detail={"comment": comment, "amount_cents": 12999, "nested": {"by": [EMAIL]}},
            occurred_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        ),
    )
    with Session(engine) as session:
        (row,) = session.exec(select(AuditEvent)).all()
    stored = json.dumps(row.detail)
    for planted in (EMAIL, "415 555 2671", "4242 4242 4242 4242"):
        assert planted not in stored
    assert "O-5004" in row.detail["comment"]
    assert {"by": ["j***@example.com"]} == row.detail["nested"]
    assert 12999 == row.detail["amount_cents"]
    assert verify_chain(engine).ok


# --- 7. search attributes -----------------------------------------------------------------------


def test_customer_id_attribute_keeps_personal_data_out() -> None:
    assert "C-1002" == sa.customer_id_attribute("C-1002")
    for personal in (EMAIL, "+1 415 555 2671", "4242424242424242"):
        value = sa.customer_id_attribute(personal)
        assert personal not in value
        assert "@" not in value
        assert value == sa.customer_id_attribute(personal)  # stable: an operator can search it
    # The same address however it is written.
    assert sa.customer_id_attribute(EMAIL) == sa.customer_id_attribute(" Jane.Doe@Example.com ")
    assert sa.customer_id_attribute(EMAIL) != sa.customer_id_attribute("john@example.com")


async def test_an_email_customer_id_is_not_a_plaintext_search_attribute(
    dev_env: WorkflowEnvironment,
) -> None:
    async with api(dev_env) as http:
        response = await http.post("/cases/refund", json=refund_body(customer_id=EMAIL))
    assert 201 == response.status_code, response.text
    description = await dev_env.client.get_workflow_handle(response.json()["case_id"]).describe()
    value = description.typed_search_attributes.get(sa.CUSTOMER_ID)
    assert sa.customer_id_attribute(EMAIL) == value
    assert EMAIL not in str(description.raw_description.workflow_execution_info.search_attributes)


# --- 8. a decision that timed out ---------------------------------------------------------------


@workflow.defn(name="refund")
class HeldDecisionWorkflow:
    """Asks one approval at one level; a decision completes only once `release` is signalled,
    so a client waiting for it times out while it is still being carried out."""

    @workflow.init
    def __init__(self, input: RefundCaseInput) -> None:
        now = workflow.now()
        policy = input.policy.approval_for(RiskLevel.MEDIUM)
        self._released = False
        self._results: dict[str, ApprovalDecisionResult] = {}
        self._state = RefundCaseState(
            case_id=workflow.info().workflow_id,
            status=CaseStatus.AWAITING_APPROVAL,
            customer_id=input.customer_id,
            amount_cents=12000,
            approval=ApprovalRequest(
                request_id="req-1",
                requested_at=now,
                requested_by=input.requester,
                sla_due_at=now + policy.levels[0].sla,
                deadline_at=now + policy.deadline,
                recommendation="approve",
                reasons=["over the automatic refund limit"],
                policy=policy,
                level_name=policy.levels[0].name,
                level_started_at=now,
                awaiting_roles=policy.levels[0].approver_roles,
                amount_cents=12000,
            ),
        )

    @workflow.run
    async def run(self, input: RefundCaseInput) -> RefundCaseResult:
        await workflow.wait_condition(lambda: self._state.decision is not None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        decision = self._state.decision
        assert decision is not None and decision.outcome is not None
        return RefundCaseResult(
            case_id=self._state.case_id,
            outcome=decision.outcome,
            amount_cents=12000,
            decided_by=decision.approver,
            reasons=[],
        )

    @workflow.query(name="get_state")
    def get_state(self) -> RefundCaseState:
        return self._state

    @workflow.signal(name="release")
    def release(self) -> None:
        self._released = True

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecisionInput) -> ApprovalDecisionResult:
        assert decision.decision_id is not None
        if decision.decision_id in self._results:
            return self._results[decision.decision_id]
        self._state.notes.append(f"received {decision.decision_id}")
        await workflow.wait_condition(lambda: self._released)
        result = ApprovalDecisionResult(
            request_id=decision.request_id,
            decision_id=decision.decision_id,
            action=ApprovalAction.APPROVE,
            approved=True,
            approver=decision.approver,
            decided_at=workflow.now(),
            level_name="team_lead",
            gate=GateStatus.APPROVED,
            amount_cents=12000,
            outcome=RefundOutcome.APPROVED,
        )
        self._results[decision.decision_id] = result
        self._state.decision = result
        self._state.status = CaseStatus.COMPLETED
        return result

    @decide.validator
    def validate_decide(self, decision: ApprovalDecisionInput) -> None:
        if decision.decision_id in self._results:
            return
        if self._state.notes:
            raise ValueError("this approval is being decided")


async def test_a_timed_out_decision_names_its_id_and_its_retry_returns_the_first_result(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    # The worker holds every decision until released: the API's wait for it runs out first.
    monkeypatch.setattr(starter.client, "UPDATE_TIMEOUT", timedelta(seconds=1))
    async with (
        Worker(dev_env.client, task_queue=settings.task_queue, workflows=[HeldDecisionWorkflow]),
        api(dev_env, settings) as http,
    ):
        case_id = (await http.post("/cases/refund", json=refund_body())).json()["case_id"]
        handle = dev_env.client.get_workflow_handle(case_id)
        approve = {"approver": "alice", "roles": ["team_lead"], "comment": "ok"}

        timed_out = assert_problem(await http.post(f"/cases/{case_id}/approve", json=approve), 503)
        decision_id = timed_out["decision_id"]
        assert isinstance(decision_id, str) and decision_id
        assert decision_id in timed_out["detail"]

        async def received() -> bool:
            state = await handle.query("get_state", result_type=RefundCaseState)
            return f"received {decision_id}" in state.notes

        async with asyncio.timeout(30):
            while not await received():
                await asyncio.sleep(0.2)
        await handle.signal("release")
        async with asyncio.timeout(30):
            await handle.result()

        retried = await http.post(
            f"/cases/{case_id}/approve", json={**approve, "decision_id": decision_id}
        )
        assert 200 == retried.status_code, retried.text
        result = retried.json()
        assert decision_id == result["decision_id"]
        assert ("approved", "alice") == (result["outcome"], result["approver"])
        # Without the id, a retry is a new decision on a closed case: the conflict of issue 9.
        again = await http.post(f"/cases/{case_id}/approve", json=approve)
        assert "case-closed" in assert_problem(again, 409)["type"]


@workflow.defn(name="refund")
class TwoLevelWorkflow:
    """Two approvals: the first decision leaves the gate open (recorded in the approval's
    decisions, as the real gate does), the second closes it and the case."""

    @workflow.init
    def __init__(self, input: RefundCaseInput) -> None:
        now = workflow.now()
        policy = input.policy.approval_for(RiskLevel.MEDIUM)
        self._results: dict[str, ApprovalDecisionResult] = {}
        self._state = RefundCaseState(
            case_id=workflow.info().workflow_id,
            status=CaseStatus.AWAITING_APPROVAL,
            customer_id=input.customer_id,
            amount_cents=12000,
            approval=ApprovalRequest(
                request_id="req-1",
                requested_at=now,
                requested_by=input.requester,
                sla_due_at=now + policy.levels[0].sla,
                deadline_at=now + policy.deadline,
                recommendation="approve",
                reasons=["over the automatic refund limit"],
                policy=policy,
                level_name="team_lead",
                level_started_at=now,
                awaiting_roles=["team_lead"],
                amount_cents=12000,
            ),
        )

    @workflow.run
    async def run(self, input: RefundCaseInput) -> RefundCaseResult:
        await workflow.wait_condition(lambda: self._state.decision is not None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        decision = self._state.decision
        assert decision is not None
        return RefundCaseResult(
            case_id=self._state.case_id,
            outcome=RefundOutcome.APPROVED,
            amount_cents=12000,
            decided_by=decision.approver,
            reasons=[],
        )

    @workflow.query(name="get_state")
    def get_state(self) -> RefundCaseState:
        return self._state

    @workflow.update(name="decide")
    async def decide(self, decision: ApprovalDecisionInput) -> ApprovalDecisionResult:
        approval = self._state.approval
        assert approval is not None and decision.decision_id is not None
        if decision.decision_id in self._results:
            return self._results[decision.decision_id]
        closing = bool(approval.decisions)
        approval.decisions.append(
            ApprovalDecisionRecord(
                decision_id=decision.decision_id,
                request_id=decision.request_id,
                action=ApprovalAction.APPROVE,
                approver=decision.approver,
                approver_roles=decision.approver_roles,
                level=len(approval.decisions) + 1,
                level_name=approval.level_name,
                comment=decision.comment,
                decided_at=workflow.now(),
                via="update",
            )
        )
        result = ApprovalDecisionResult(
            request_id=decision.request_id,
            decision_id=decision.decision_id,
            approved=True,
            approver=decision.approver,
            decided_at=workflow.now(),
            level=len(approval.decisions),
            level_name=approval.level_name,
            gate=GateStatus.APPROVED if closing else GateStatus.OPEN,
            amount_cents=12000,
            outcome=RefundOutcome.APPROVED if closing else None,
        )
        self._results[decision.decision_id] = result
        if closing:
            approval.status = GateStatus.APPROVED
            self._state.decision = result
            self._state.status = CaseStatus.COMPLETED
        else:
            approval.level, approval.level_name = 2, "finance"
            approval.awaiting_roles = ["finance"]
        return result


async def test_a_retried_decision_that_left_the_gate_open_returns_its_result_once_closed(
    dev_env: WorkflowEnvironment,
) -> None:
    settings = make_settings()
    async with (
        Worker(dev_env.client, task_queue=settings.task_queue, workflows=[TwoLevelWorkflow]),
        api(dev_env, settings) as http,
    ):
        case_id = (await http.post("/cases/refund", json=refund_body())).json()["case_id"]
        first = await http.post(
            f"/cases/{case_id}/approve",
            json={"approver": "alice", "roles": ["team_lead"], "decision_id": "d-first"},
        )
        assert 200 == first.status_code, first.text
        assert "open" == first.json()["gate"]
        closing = await http.post(
            f"/cases/{case_id}/approve",
            json={"approver": "bob", "roles": ["finance"], "decision_id": "d-closing"},
        )
        assert "approved" == closing.json()["gate"], closing.text
        async with asyncio.timeout(30):
            await dev_env.client.get_workflow_handle(case_id).result()

        # Alice's client never saw her answer (a 503) and retries with her decision id.
        retried = await http.post(
            f"/cases/{case_id}/approve",
            json={"approver": "alice", "roles": ["team_lead"], "decision_id": "d-first"},
        )
        assert 200 == retried.status_code, retried.text
        expected = {
            "decision_id": "d-first",
            "approver": "alice",
            "approved": True,
            "gate": "open",
            "level": 1,
            "level_name": "team_lead",
        }
        assert expected.items() <= retried.json().items()
