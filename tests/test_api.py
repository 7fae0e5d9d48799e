# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""The HTTP API end to end against a real Temporal dev server.

Cases that only need to exist are started on a fresh task queue with no worker: the workflow just
stays pending. Tests of decisions and of the pending list run a stand-in workflow registered as
`"refund"`, with the contract the starter codes against (update `decide` with its validator, query
`get_state`, the search attributes), so they exercise the real Temporal round trips.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import workflow

from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import (
    ApprovalAction,
    ApprovalDecisionInput,
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
from workflows.registry import PROCESSES

with workflow.unsafe.imports_passed_through():
    import httpx
    import pytest
    import structlog.testing
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.service import RPCError, RPCStatusCode
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    import starter.client
    from core.settings import Settings
    from starter.api import create_app
    from starter.client import PodiumClient
    from tests.auth_helpers import TEST_JWT_SECRET, AsCaller
    from workflows.refund.starting import RefundRequest

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"


# --- a stand-in for the refund workflow ---------------------------------------------------------


@workflow.defn(name="refund")
class StandInRefundWorkflow:
    """Waits for one approval at one level (`team_lead`, or a delegate). The amount in cents is
    the number in the order id (`O-12000`)."""

    @workflow.init
    def __init__(self, input: RefundCaseInput) -> None:
        now = workflow.now()
        amount_cents = int((input.order_id or "O-0").split("-")[1])
        policy = input.policy.approval_for(RiskLevel.MEDIUM)
        self._results: dict[str, ApprovalDecisionResult] = {}
        self._state = RefundCaseState(
            case_id=workflow.info().workflow_id,
            status=CaseStatus.AWAITING_APPROVAL,
            customer_id=input.customer_id,
            order_id=input.order_id,
            amount_cents=amount_cents,
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
                amount_cents=amount_cents,
            ),
        )

    @workflow.run
    async def run(self, input: RefundCaseInput) -> RefundCaseResult:
        approval = self._state.approval
        assert approval is not None and self._state.amount_cents is not None
        self._upsert_waiting()
        workflow.upsert_search_attributes(
            [
                sa.STATUS.value_set(CaseStatus.AWAITING_APPROVAL.value),
                sa.AWAITING_APPROVAL.value_set(True),
                sa.AMOUNT.value_set(self._state.amount_cents / 100),
                sa.SLA_DUE_AT.value_set(approval.sla_due_at),
                sa.CUSTOMER_TIER.value_set("gold"),
                sa.INTENT.value_set("refund_request"),
                sa.ESCALATED.value_set(False),
            ]
        )
        await workflow.wait_condition(lambda: self._state.decision is not None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        decision = self._state.decision
        assert decision is not None and decision.outcome is not None
        return RefundCaseResult(
            case_id=self._state.case_id,
            outcome=decision.outcome,
            amount_cents=self._state.amount_cents,
            refund_amount_cents=decision.amount_cents if decision.approved else None,
            refund_id=decision.effects.get("refund_id"),
            decided_by=decision.approver,
            reasons=approval.reasons,
        )

    def _upsert_waiting(self) -> None:
        approval = self._state.approval
        assert approval is not None
        waiting = [*approval.awaiting_roles, *(f"user:{d}" for d in approval.delegates)]
        workflow.upsert_search_attributes(
            [sa.AWAITING_ROLES.value_set(waiting), sa.APPROVAL_LEVEL.value_set(1)]
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
        action = decision.resolved_action
        result = ApprovalDecisionResult(
            request_id=decision.request_id,
            decision_id=decision.decision_id,
            action=action,
            approved=action in (ApprovalAction.APPROVE, ApprovalAction.REQUEST_CHANGES),
            approver=decision.approver,
            decided_at=workflow.now(),
            level_name=approval.level_name,
            gate=GateStatus.OPEN,
            amount_cents=decision.new_amount_cents or self._state.amount_cents,
        )
        if action == ApprovalAction.DELEGATE:
            assert decision.delegate_to is not None
            approval.delegates.append(decision.delegate_to)
            result.waiting_for = [*approval.awaiting_roles, f"user:{decision.delegate_to}"]
            self._upsert_waiting()
            self._results[decision.decision_id] = result
            return result
        outcome = RefundOutcome.APPROVED if result.approved else RefundOutcome.REJECTED
        result.gate = GateStatus.APPROVED if result.approved else GateStatus.REJECTED
        result.outcome = outcome
        result.effects = {"refund_id": f"R-{self._state.case_id}"} if result.approved else {}
        self._state.decision = result
        self._results[decision.decision_id] = result
        self._state.status = CaseStatus.COMPLETED
        self._state.outcome = outcome
        workflow.upsert_search_attributes(
            [
                sa.AWAITING_APPROVAL.value_set(False),
                sa.AWAITING_ROLES.value_unset(),
                sa.STATUS.value_set(CaseStatus.COMPLETED.value),
                sa.OUTCOME.value_set(outcome.value),
            ]
        )
        return result

    @decide.validator
    def validate_decide(self, decision: ApprovalDecisionInput) -> None:
        approval = self._state.approval
        if approval is None:
            raise ValueError("no approval is pending for this case")
        if decision.decision_id in self._results:
            return
        if decision.request_id != approval.request_id:
            raise ValueError(f"unknown or stale request_id '{decision.request_id}'")
        if self._state.decision is not None:
            raise ValueError("this approval has already been decided")
        if not decision.approver:
            raise ValueError("an approver is required")
        entitled = set(decision.approver_roles) & set(approval.awaiting_roles)
        if not entitled and decision.approver not in approval.delegates:
            raise ValueError(f"'{decision.approver}' lacks a role for level 1 'team_lead'")


# --- fixtures and helpers -----------------------------------------------------------------------


def make_settings(**overrides: Any) -> Settings:
    overrides.setdefault("task_queue", f"test-{uuid.uuid4()}")
    overrides.setdefault("jwt_secret", TEST_JWT_SECRET)
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def api(env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async def factory(_: Settings) -> Client:
        return env.client

    app = create_app(settings, factory)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://podium.test", auth=AsCaller()
        ) as http,
    ):
        yield http


@pytest.fixture
async def idle_api(dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a fresh task queue that no worker polls."""
    async with api(dev_env, make_settings()) as http:
        yield http


@pytest.fixture
async def live_settings(dev_env: WorkflowEnvironment) -> AsyncIterator[Settings]:
    """Settings whose task queue a worker running the stand-in workflow polls."""
    settings = make_settings()
    async with Worker(
        dev_env.client, task_queue=settings.task_queue, workflows=[StandInRefundWorkflow]
    ):
        yield settings


@pytest.fixture
async def live_api(
    dev_env: WorkflowEnvironment, live_settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    async with api(dev_env, live_settings) as http:
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


def new_key() -> str:
    return f"test-{uuid.uuid4().hex}"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert status == response.status_code, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem: dict[str, Any] = response.json()
    assert status == problem["status"]
    assert problem["title"]
    assert problem["type"]
    assert "Traceback" not in response.text
    return problem


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Visibility is eventually consistent: poll until `check` holds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.2)


async def count_on(env: WorkflowEnvironment, task_queue: str) -> int:
    return (await env.client.count_workflows(f'TaskQueue = "{task_queue}"')).count


async def assert_not_started(env: WorkflowEnvironment, case_id: str) -> None:
    with pytest.raises(RPCError) as caught:
        await env.client.get_workflow_handle(case_id).describe()
    assert RPCStatusCode.NOT_FOUND == caught.value.status


# --- health and docs ----------------------------------------------------------------------------


async def test_healthz_reports_temporal_reachable(idle_api: httpx.AsyncClient) -> None:
    response = await idle_api.get("/healthz")
    assert 200 == response.status_code
    assert {"status": "ok", "temporal_reachable": True} == response.json()


async def test_healthz_answers_while_temporal_is_down() -> None:
    async def unreachable(_: Settings) -> Client:
        # Nothing listens on port 1; lazy, as the API's own client is.
        return await Client.connect(
            "127.0.0.1:1", lazy=True, data_converter=pydantic_data_converter
        )

    app = create_app(make_settings(), unreachable)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://podium.test", auth=AsCaller()
        ) as http,
    ):
        health = await http.get("/healthz")
        assert {"status": "ok", "temporal_reachable": False} == health.json()
        problem = assert_problem(await http.get("/cases/refund-anything"), 503)
        assert "temporal-unavailable" in problem["type"]


async def test_openapi_describes_the_routes(idle_api: httpx.AsyncClient) -> None:
    assert 200 == (await idle_api.get("/docs")).status_code
    paths = (await idle_api.get("/openapi.json")).json()["paths"]
    expected = {
        "/processes",
        *(f"/cases/{name}" for name in PROCESSES.names),
        "/cases/{process}",
        "/cases/{case_id}",
        "/cases/{case_id}/approve",
        "/cases/{case_id}/reject",
        "/cases/{case_id}/request-changes",
        "/cases/{case_id}/delegate",
        "/cases/{case_id}/verification-code",
        "/approvals/pending",
        "/approvals",
        "/approvals/{case_id}",
        "/documents",
        "/employees/{user_name}/termination",
        "/messages",
        "/carrier/webhooks",
        "/reports",
        "/reports.json",
        "/healthz",
    }
    assert expected == set(paths)


# --- opening cases ------------------------------------------------------------------------------


async def test_create_starts_a_case_stamped_with_settings_policy(
    dev_env: WorkflowEnvironment,
) -> None:
    settings = make_settings(auto_refund_limit=250.5, approval_sla_hours=4, policy_as_code=False)
    async with api(dev_env, settings) as http:
        response = await http.post(
            "/cases/refund", json=refund_body(), headers={"Idempotency-Key": (key := new_key())}
        )
    assert 201 == response.status_code, response.text
    ref = response.json()
    assert f"refund-{key}" == ref["case_id"]
    assert ref["created"] is True
    assert f"/cases/refund-{key}" == response.headers["location"]
    assert ref["ui_url"].endswith(f"/namespaces/default/workflows/refund-{key}")

    handle = dev_env.client.get_workflow_handle(ref["case_id"])
    description = await handle.describe()
    assert "refund" == description.workflow_type
    assert settings.task_queue == description.task_queue
    assert "Refund request from C-1002 for order O-12000 via email" == (
        await description.static_summary()
    )
    assert "The blender arrived broken" in (await description.static_details() or "")
    # The API stamps the caller (AsCaller's default) as who requested it.
    stamped = RefundRequest.model_validate(refund_body(requested_by="tester@example.com"))
    assert stamped.sha256() == await description.memo_value("request_sha256")
    attributes = description.typed_search_attributes
    assert "refund" == attributes.get(sa.PROCESS)
    assert "C-1002" == attributes.get(sa.CUSTOMER_ID)
    assert "received" == attributes.get(sa.STATUS)

    started = (await handle.fetch_history()).events[0].workflow_execution_started_event_attributes
    [case_input] = await dev_env.client.data_converter.decode(
        started.input.payloads, [RefundCaseInput]
    )
    assert 25_050 == case_input.policy.auto_refund_limit_cents
    medium = case_input.policy.approval_for(RiskLevel.MEDIUM)
    high = case_input.policy.approval_for(RiskLevel.HIGH)
    assert ["team_lead"] == [level.name for level in medium.levels]
    assert ["team_lead", "finance"] == [level.name for level in high.levels]
    assert {timedelta(hours=4)} == {level.sla for level in [*medium.levels, *high.levels]}
    assert [0.5, 0.9] == medium.levels[0].reminders
    assert (timedelta(days=7), "deny", True) == (
        high.deadline,
        high.default_action,
        high.four_eyes,
    )
    assert "tester@example.com" == case_input.requester  # the caller, from the token
    assert "O-12000" == case_input.order_id


async def test_create_without_key_opens_a_new_case_each_time(idle_api: httpx.AsyncClient) -> None:
    first = await idle_api.post("/cases/refund", json=refund_body())
    second = await idle_api.post("/cases/refund", json=refund_body())
    assert 201 == first.status_code == second.status_code
    assert first.json()["case_id"] != second.json()["case_id"]
    assert first.json()["case_id"].startswith("refund-")


async def test_same_key_and_body_returns_the_existing_case(idle_api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": new_key()}
    first = await idle_api.post("/cases/refund", json=refund_body(), headers=headers)
    # Whitespace and key order do not make a different request.
    same = refund_body(message="  The blender arrived broken. I want my money back.  ")
    second = await idle_api.post(
        "/cases/refund", json=dict(reversed(same.items())), headers=headers
    )
    assert 201 == first.status_code
    assert 200 == second.status_code, second.text
    assert first.json()["case_id"] == second.json()["case_id"]
    assert second.json()["created"] is False


async def test_same_key_different_body_is_a_conflict(idle_api: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": new_key()}
    first = await idle_api.post("/cases/refund", json=refund_body(), headers=headers)
    assert 201 == first.status_code
    response = await idle_api.post(
        "/cases/refund", json=refund_body(order_id="O-999"), headers=headers
    )
    problem = assert_problem(response, 409)
    assert "idempotency-conflict" in problem["type"]
    assert first.json()["case_id"] in problem["detail"]


async def test_closed_case_still_holds_its_key(
    dev_env: WorkflowEnvironment, idle_api: httpx.AsyncClient
) -> None:
    headers = {"Idempotency-Key": new_key()}
    ref = (await idle_api.post("/cases/refund", json=refund_body(), headers=headers)).json()
    await dev_env.client.get_workflow_handle(ref["case_id"]).terminate("test")
    again = await idle_api.post("/cases/refund", json=refund_body(), headers=headers)
    assert 200 == again.status_code
    assert ref["case_id"] == again.json()["case_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({k: v for k, v in refund_body().items() if k != "message"}, "message"),
        (refund_body(customer_id="   "), "customer_id"),
        (refund_body(customer_id=""), "customer_id"),
        (refund_body(message="x" * 5_001), "message"),
        (refund_body(channel=7), "channel"),
    ],
    ids=["missing-message", "blank-customer", "empty-customer", "long-message", "bad-channel"],
)
async def test_bad_body_is_422_with_field_errors_and_starts_nothing(
    dev_env: WorkflowEnvironment, idle_api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    key = new_key()
    response = await idle_api.post("/cases/refund", json=body, headers={"Idempotency-Key": key})
    problem = assert_problem(response, 422)
    assert [field] == [error["field"] for error in problem["errors"]]
    assert {"body"} == {error["location"] for error in problem["errors"]}
    await assert_not_started(dev_env, f"refund-{key}")


async def test_malformed_json_is_422(idle_api: httpx.AsyncClient) -> None:
    response = await idle_api.post(
        "/cases/refund", content=b"{not json", headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"]


@pytest.mark.parametrize("key", ["has space", "x" * 101, "", "a/b"])
async def test_bad_idempotency_key_is_422_and_starts_nothing(
    dev_env: WorkflowEnvironment, key: str
) -> None:
    settings = make_settings()
    async with api(dev_env, settings) as http:
        response = await http.post(
            "/cases/refund", json=refund_body(), headers={"Idempotency-Key": key}
        )
        problem = assert_problem(response, 422)
        assert ["Idempotency-Key"] == [error["field"] for error in problem["errors"]]
        assert ["header"] == [error["location"] for error in problem["errors"]]
        # A good request on the same task queue shows up in visibility; the bad one never does.
        assert 201 == (await http.post("/cases/refund", json=refund_body())).status_code
    await eventually(lambda: _count_is_at_least(dev_env, settings.task_queue, 1))
    assert 1 == await count_on(dev_env, settings.task_queue)


async def _count_is_at_least(env: WorkflowEnvironment, task_queue: str, count: int) -> bool:
    return await count_on(env, task_queue) >= count


# --- reading cases ------------------------------------------------------------------------------


async def test_unknown_case_is_404_problem(idle_api: httpx.AsyncClient) -> None:
    problem = assert_problem(await idle_api.get(f"/cases/refund-{uuid.uuid4().hex}"), 404)
    assert "case-not-found" in problem["type"]


async def test_unknown_route_is_404_problem(idle_api: httpx.AsyncClient) -> None:
    assert_problem(await idle_api.get("/nowhere"), 404)


async def test_get_case_shows_the_workflow_state(live_api: httpx.AsyncClient) -> None:
    ref = (await live_api.post("/cases/refund", json=refund_body())).json()
    response = await live_api.get(f"/cases/{ref['case_id']}")
    assert 200 == response.status_code, response.text
    view = response.json()
    assert "running" == view["workflow_status"]
    assert "awaiting_approval" == view["status"]
    assert view["outcome"] is None
    assert 12_000 == view["state"]["amount_cents"]
    assert "req-1" == view["state"]["approval"]["request_id"]
    assert view["summary"].startswith("Refund request from C-1002")


# --- decisions ----------------------------------------------------------------------------------


async def test_approve_carries_out_the_decision_and_the_case_closes(
    dev_env: WorkflowEnvironment, live_api: httpx.AsyncClient
) -> None:
    case_id = (await live_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    response = await live_api.post(
        f"/cases/{case_id}/approve",
        json={"approver": "alice", "roles": ["team_lead"], "comment": "ok", "decision_id": "d-1"},
    )
    assert 200 == response.status_code, response.text
    result = response.json()
    expected = {"request_id": "req-1", "approved": True, "approver": "alice", "decision_id": "d-1"}
    assert expected.items() <= result.items()
    assert ("approved", "approve", "approved") == (
        result["outcome"],
        result["action"],
        result["gate"],
    )

    await dev_env.client.get_workflow_handle(case_id).result()
    view = (await live_api.get(f"/cases/{case_id}")).json()
    assert "completed" == view["workflow_status"]
    assert "approved" == view["outcome"]
    assert "alice" == view["state"]["decision"]["approver"]

    again = await live_api.post(
        f"/cases/{case_id}/reject", json={"approver": "bob", "roles": ["team_lead"], "reason": "x"}
    )
    problem = assert_problem(again, 409)
    assert "case-closed" in problem["type"]

    # A retry of the decision that closed the case returns its result, not a conflict.
    retried = await live_api.post(
        f"/cases/{case_id}/approve",
        json={"approver": "alice", "roles": ["team_lead"], "decision_id": "d-1"},
    )
    assert 200 == retried.status_code, retried.text
    assert result == retried.json()


async def test_closed_case_without_a_worker_falls_back_on_the_result(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    podium = PodiumClient(dev_env.client, settings)
    async with Worker(
        dev_env.client, task_queue=settings.task_queue, workflows=[StandInRefundWorkflow]
    ):
        ref = await podium.create_refund_case(
            RefundRequest(customer_id="C-3", order_id="O-700", message="refund")
        )
        await podium.decide(ref.case_id, "reject", "bob", roles=["team_lead"], reason="no")
        await dev_env.client.get_workflow_handle(ref.case_id).result()
    # The worker is gone: `get_state` cannot be answered, the result still can. (Short query
    # timeout only now: with a worker on a busy machine a query may well take a second.)
    monkeypatch.setattr(starter.client, "QUERY_TIMEOUT", timedelta(seconds=1))
    async with api(dev_env, settings) as http:
        view = (await http.get(f"/cases/{ref.case_id}")).json()
    assert view["state"] is None
    assert "rejected" == view["outcome"]
    assert "completed" == view["workflow_status"]
    assert {"decided_by": "bob", "amount_cents": 700}.items() <= view["result"].items()


async def test_stale_request_id_is_refused_with_the_validators_reason(
    dev_env: WorkflowEnvironment, live_api: httpx.AsyncClient
) -> None:
    case_id = (await live_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    response = await live_api.post(
        f"/cases/{case_id}/reject",
        json={"approver": "bob", "roles": ["team_lead"], "reason": "no", "request_id": "req-0"},
    )
    problem = assert_problem(response, 409)
    assert "decision-refused" in problem["type"]
    assert "unknown or stale request_id 'req-0'" == problem["detail"]
    # Refused in the validator: nothing reached the case's history.
    description = await dev_env.client.get_workflow_handle(case_id).describe()
    assert WorkflowExecutionStatus.RUNNING == description.status
    view = (await live_api.get(f"/cases/{case_id}")).json()
    assert view["state"]["decision"] is None


async def test_reject_with_explicit_request_id(live_api: httpx.AsyncClient) -> None:
    case_id = (await live_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    response = await live_api.post(
        f"/cases/{case_id}/reject",
        json={
            "approver": "bob",
            "roles": ["team_lead"],
            "reason": "outside the window",
            "request_id": "req-1",
        },
    )
    assert 200 == response.status_code, response.text
    assert "rejected" == response.json()["outcome"]
    assert {} == response.json()["effects"]


async def test_decide_on_unknown_case_is_404(idle_api: httpx.AsyncClient) -> None:
    case_id = f"refund-{uuid.uuid4().hex}"
    bodies = {
        "approve": {},
        "reject": {"reason": "no"},
        "request-changes": {"amount": "10.00"},
        "delegate": {"to": "bob", "reason": "away"},
    }
    for verb, extra in bodies.items():
        body = {"approver": "alice", "roles": ["team_lead"], **extra}
        response = await idle_api.post(f"/cases/{case_id}/{verb}", json=body)
        assert "case-not-found" in assert_problem(response, 404)["type"], verb


async def test_decide_on_closed_case_is_409(
    dev_env: WorkflowEnvironment, idle_api: httpx.AsyncClient
) -> None:
    case_id = (await idle_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    await dev_env.client.get_workflow_handle(case_id).terminate("test")
    response = await idle_api.post(f"/cases/{case_id}/approve", json={"approver": "alice"})
    problem = assert_problem(response, 409)
    assert "case-closed" in problem["type"]
    assert "terminated" in problem["detail"]


@pytest.mark.parametrize("body", [{"approver": ""}, {"approver": "   "}])
async def test_decide_refuses_a_blank_approver(
    idle_api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await idle_api.post(f"/cases/refund-{uuid.uuid4().hex}/approve", json=body)
    problem = assert_problem(response, 422)
    assert ["approver"] == [error["field"] for error in problem["errors"]]


async def test_wrong_role_is_refused_and_a_delegate_decides(
    live_api: httpx.AsyncClient,
) -> None:
    case_id = (await live_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    wrong = await live_api.post(
        f"/cases/{case_id}/approve", json={"approver": "fin", "roles": ["finance"]}
    )
    # Holding no role of the level deciding now is a matter of permission.
    problem = assert_problem(wrong, 403)
    assert "urn:podium:problem:forbidden" == problem["type"]
    assert "may not decide at level 'team_lead'" in problem["detail"]

    delegated = await live_api.post(
        f"/cases/{case_id}/delegate",
        json={"approver": "alice", "roles": ["team_lead"], "to": "bob", "reason": "on leave"},
    )
    assert 200 == delegated.status_code, delegated.text
    assert ("delegate", "open", ["team_lead", "user:bob"]) == (
        delegated.json()["action"],
        delegated.json()["gate"],
        delegated.json()["waiting_for"],
    )
    approved = await live_api.post(f"/cases/{case_id}/approve", json={"approver": "bob"})
    assert 200 == approved.status_code, approved.text
    assert "approved" == approved.json()["outcome"]


async def test_request_changes_sends_the_lower_amount_in_cents(
    live_api: httpx.AsyncClient,
) -> None:
    case_id = (await live_api.post("/cases/refund", json=refund_body())).json()["case_id"]
    response = await live_api.post(
        f"/cases/{case_id}/request-changes",
        json={"approver": "alice", "roles": ["team_lead"], "amount": "75.50", "reason": "used"},
    )
    assert 200 == response.status_code, response.text
    assert ("request_changes", 7_550, "approved") == (
        response.json()["action"],
        response.json()["amount_cents"],
        response.json()["outcome"],
    )


@pytest.mark.parametrize(
    ("verb", "body", "field"),
    [
        ("reject", {"approver": "a"}, "reason"),
        ("reject", {"approver": "a", "reason": "  "}, "reason"),
        ("request-changes", {"approver": "a", "amount": "0"}, "amount"),
        ("request-changes", {"approver": "a", "amount": "1.234"}, "amount"),
        ("delegate", {"approver": "a", "reason": "x"}, "to"),
        ("approve", {"approver": "a", "roles": ["has space"]}, "roles.0"),
        ("approve", {"approver": "a", "decision_id": "no spaces"}, "decision_id"),
    ],
)
async def test_bad_decision_bodies_are_422(
    idle_api: httpx.AsyncClient, verb: str, body: dict[str, Any], field: str
) -> None:
    response = await idle_api.post(f"/cases/refund-{uuid.uuid4().hex}/{verb}", json=body)
    problem = assert_problem(response, 422)
    assert [field] == [error["field"] for error in problem["errors"]]


# --- pending approvals --------------------------------------------------------------------------


async def test_pending_lists_waiting_cases_most_urgent_first(
    dev_env: WorkflowEnvironment, live_settings: Settings
) -> None:
    # Same task queue, different SLA policies: the later case is due sooner.
    relaxed = PodiumClient(dev_env.client, live_settings)
    urgent = PodiumClient(
        dev_env.client, live_settings.model_copy(update={"approval_sla_hours": 2})
    )
    big = await relaxed.create_refund_case(
        RefundRequest(customer_id="C-1", order_id="O-25000", message="refund please")
    )
    small = await urgent.create_refund_case(
        RefundRequest(customer_id="C-2", order_id="O-5000", message="refund please")
    )
    ours = {big.case_id, small.case_id}

    async with api(dev_env, live_settings) as http:

        async def listed(params: dict[str, Any]) -> list[dict[str, Any]]:
            response = await http.get("/approvals/pending", params=params)
            assert 200 == response.status_code, response.text
            return [item for item in response.json() if item["case_id"] in ours]

        async def both_listed() -> bool:
            return len(await listed({})) == 2

        await eventually(both_listed)
        items = await listed({})
        assert [small.case_id, big.case_id] == [item["case_id"] for item in items]
        assert {"customer_id": "C-2", "tier": "gold", "intent": "refund_request"}.items() <= (
            items[0].items()
        )
        assert 50.0 == items[0]["amount"]
        assert items[0]["sla_due_at"] < items[1]["sla_due_at"]

        assert [big.case_id] == [item["case_id"] for item in await listed({"min_amount": 100})]
        assert (1, ["team_lead"]) == (items[0]["level"], items[0]["awaiting_roles"])
        assert 2 == len(await listed({"role": "team_lead"}))
        assert [] == await listed({"role": "finance"})

        decided = await relaxed.decide(big.case_id, "approve", "alice", roles=["team_lead"])
        assert RefundOutcome.APPROVED == decided.outcome

        async def only_small_left() -> bool:
            return [small.case_id] == [item["case_id"] for item in await listed({})]

        await eventually(only_small_left)


@pytest.mark.parametrize(
    "params",
    [{"min_amount": -1}, {"min_amount": "lots"}, {"limit": 0}, {"role": 'x" OR true'}],
)
async def test_pending_rejects_bad_filters(
    idle_api: httpx.AsyncClient, params: dict[str, Any]
) -> None:
    problem = assert_problem(await idle_api.get("/approvals/pending", params=params), 422)
    assert [next(iter(params))] == [error["field"] for error in problem["errors"]]
    assert ["query"] == [error["location"] for error in problem["errors"]]


# --- the unexpected -----------------------------------------------------------------------------


async def test_unexpected_error_is_a_generic_500_problem(
    idle_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def explode(self: PodiumClient, case_id: str) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(PodiumClient, "get_case", explode)
    with structlog.testing.capture_logs() as logs:
        response = await idle_api.get("/cases/refund-x")
    problem = assert_problem(response, 500)
    assert "secret internals" not in response.text
    assert "Internal error" == problem["title"]
    [logged] = [entry for entry in logs if entry["event"] == "api_unhandled_error"]
    assert {"method": "GET", "path": "/cases/refund-x"}.items() <= logged.items()
