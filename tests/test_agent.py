"""The tool-calling agent end to end: `agent_assist` on the time-skipping test server, the real
agent, tool, audit and notification activities on a temporary SQLite database, and the model a
scripted OpenAI-compatible server on loopback (`tests/fake_openai.py`) that asks for tools.

Seeded data: customer C-1002 owns O-5003 ($349.00, delivered) and O-5004; O-5001 is C-1001's.
"""

# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.agent import AgentActivities
from activities.agent_types import (
    AgentStepInput,
    LoadTranscriptInput,
    StoreTranscriptInput,
    ToolCallStatus,
    TranscriptRef,
)
from activities.intelligence import EmbeddedModels
from activities.intelligence.config import DEFAULT_MODELS_FILE
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from core.db import AgentTranscript, AuditEvent, Credit, ModelCall, Ticket
from core.policy import DEFAULT_POLICY_FILE, load_policy
from tests.fake_openai import FakeOpenAI, RecordedRequest, Scripted, chat_completion, tool_calls
from tests.helpers import (
    history_recording,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from worker import agent_activities, workflow_runner
from workflows.agent_assist.types import (
    AgentAssistInput,
    AgentAssistResult,
    AgentAssistState,
    AgentAssistStatus,
)
from workflows.agent_assist.workflow import TOOLS
from workflows.components.agent_types import AgentLimits, AgentOutcome
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult, GateStatus
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(90)

Handle = WorkflowHandle[Any, AgentAssistResult]
KEY_ENV = "PODIUM_TEST_AGENT_KEY"
# USD per million tokens: a scripted turn (100 in, 20 out) costs 1,600 micro-dollars.
PRICES = {"input_usd_per_1m": "10", "output_usd_per_1m": "30"}
TURN_MICRO_USD = 1_600
QUESTION = "Where is my order O-5003? It was supposed to arrive last week."
PROMPT_LINE = "You are Podium's customer-service assistant"
LEAD = {"approver": "lead@acme.test", "approver_roles": ["team_lead"]}
HISTORIES = Path(__file__).parent / "histories"
# `PODIUM_RECORD_AGENT_HISTORIES=1 pytest tests/test_agent.py` (re)writes the committed
# `tests/histories/agent_assist-*.json` that `test_replay.py` replays: only for a deliberate,
# versioned change of the workflow.
RECORD = history_recording("PODIUM_RECORD_AGENT_HISTORIES")


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv(KEY_ENV, "sk-test-agent")
    with FakeOpenAI(max_lifetime=80) as server:
        yield server


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


def models_file(folder: Path, base_url: str | None) -> Path:
    """The repository's models file, plus (with a `base_url`) a chat model for the agent."""
    document = yaml.safe_load(DEFAULT_MODELS_FILE.read_text())
    document["prompts_dir"] = str(DEFAULT_MODELS_FILE.parent / "prompts")
    if base_url is not None:
        document["models"]["chat"] = {
            "kind": "openai_compatible",
            "base_url": base_url,
            "model": "chat-model",
            "api_key_env": KEY_ENV,
            "timeout_seconds": 5,
            **PRICES,
        }
        document["tasks"]["agent"] = {"model": "chat"}
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def gateway(
    tmp_path: Path, fake: FakeOpenAI, models: EmbeddedModels, engine: Engine
) -> Iterator[ModelGateway]:
    gateway = ModelGateway.from_file(
        models_file(tmp_path, fake.base_url), models, ledger=ModelLedger(engine)
    )
    yield gateway
    gateway.close()


_STARTED: list[Handle] = []


@contextlib.asynccontextmanager
async def running_worker(
    env: WorkflowEnvironment, engine: Engine, gateway: ModelGateway
) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            env.client,
            [*real_system_activities(engine), *agent_activities(engine, gateway)],
            executor,
        )
        async with worker:
            yield worker
            # A case left running (a failed test) would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


@pytest.fixture
async def worker(
    time_env: WorkflowEnvironment, engine: Engine, gateway: ModelGateway
) -> AsyncIterator[Worker]:
    async with running_worker(time_env, engine, gateway) as worker:
        yield worker


# --- Helpers ------------------------------------------------------------------------------------


async def start(env: WorkflowEnvironment, worker: Worker, **fields: Any) -> Handle:
    fields.setdefault("customer_id", "C-1002")
    fields.setdefault("message", QUESTION)
    handle: Handle = await env.client.start_workflow(
        "agent_assist",
        AgentAssistInput(**fields),
        id=f"agent-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=AgentAssistResult,
    )
    _STARTED.append(handle)
    return handle


async def state_of(handle: Handle) -> AgentAssistState:
    return await handle.query("get_state", result_type=AgentAssistState)


async def awaiting_approval(handle: Handle) -> AgentAssistState:
    for _ in range(500):
        state = await state_of(handle)
        if state.status == AgentAssistStatus.AWAITING_APPROVAL and state.approval is not None:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"no approval was requested; status {state.status}")


async def decide(handle: Handle, **fields: Any) -> ApprovalDecisionResult:
    fields.setdefault("request_id", "tool-1-1")
    fields.setdefault("decision_id", uuid.uuid4().hex)
    fields.setdefault("action", "approve")
    return await handle.execute_update(
        "decide",
        signed(handle.id, ApprovalDecisionInput(**fields)),
        result_type=ApprovalDecisionResult,
    )


def tool_names(request: RecordedRequest) -> list[str]:
    return [tool["function"]["name"] for tool in request.body.get("tools", [])]


def tool_messages(request: RecordedRequest) -> dict[str, dict[str, Any]]:
    """The tool results the model was sent, by tool call id, their content decoded."""
    return {
        m["tool_call_id"]: json.loads(m["content"]) for m in request.messages if m["role"] == "tool"
    }


def call_ids(request: RecordedRequest) -> list[str]:
    """Ids of the tool calls of the last assistant message the model was sent."""
    assistant = [m for m in request.messages if m["role"] == "assistant"][-1]
    return [call["id"] for call in assistant["tool_calls"]]


def audit(engine: Engine, case_id: str) -> list[AuditEvent]:
    with Session(engine) as session:
        query = select(AuditEvent).where(AuditEvent.case_id == case_id)
        return list(session.exec(query.order_by(col(AuditEvent.id))))


def actions(engine: Engine, case_id: str) -> list[str]:
    return [event.action for event in audit(engine, case_id)]


def credits(engine: Engine, case_id: str) -> list[Credit]:
    with Session(engine) as session:
        return list(session.exec(select(Credit).where(Credit.case_id == case_id)))


async def history_bytes(handle: Handle) -> bytes:
    """Every event of the run, serialized: payloads are raw JSON bytes inside."""
    history = await handle.fetch_history()
    return b"".join(event.SerializeToString() for event in history.events)


def answer(text: str) -> Scripted:
    return chat_completion(text)


async def replays(handle: Handle, path: str, run_id: str | None = None) -> None:
    """The run's history replays on the current code (and, when recording, is committed)."""
    history = await handle._client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if name := RECORD(path):
        (HISTORIES / f"agent_assist-{name}.json").write_text(history.to_json())


# --- (a) an allowed tool ------------------------------------------------------------------------


async def test_allowed_tool_runs_and_the_transcript_stays_out_of_history(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    fake: FakeOpenAI,
    gateway: ModelGateway,
) -> None:
    thinking = "TRANSCRIPT-MARKER " + "let me check the order status first. " * 60
    fake.enqueue(
        tool_calls(("lookup_order_status", {"order_id": "O-5003"}), content=thinking),
        answer("Your order O-5003 was delivered. FINAL-ANSWER"),
    )
    handle = await start(time_env, worker)
    result = await handle.result()

    assert (AgentOutcome.COMPLETED, "Your order O-5003 was delivered. FINAL-ANSWER") == (
        result.outcome,
        result.answer,
    )
    assert [("lookup_order_status", ToolCallStatus.OK)] == [
        (call.name, call.status) for call in result.tool_calls
    ]
    first, second = fake.requests
    assert ["lookup_order_status", "create_ticket_note", "issue_goodwill_credit"] == tool_names(
        first
    )
    lookup = next(t for t in first.body["tools"] if t["function"]["name"] == "lookup_order_status")
    assert ["order_id"] == lookup["function"]["parameters"]["required"]
    assert "Bearer sk-test-agent" == first.headers["authorization"]
    assert [("system", True), ("user", QUESTION)] == [
        (m["role"], m["content"].startswith(PROMPT_LINE) if m["role"] == "system" else m["content"])
        for m in first.messages
    ]
    # The next request repeats the tool call and carries its result.
    results = tool_messages(second)
    assert call_ids(second) == list(results)
    looked_up = next(iter(results.values()))
    assert (True, "O-5003", "delivered") == (
        looked_up["found"],
        looked_up["order_id"],
        looked_up["status"],
    )
    assert thinking == next(m for m in second.messages if m["role"] == "assistant")["content"]

    # The transcript is in the database: open, model turn, tool results, model turn.
    point = result.checkpoint
    assert (2, 4, 200, 40, 2 * TURN_MICRO_USD) == (
        point.steps,
        point.transcript.step,
        point.tokens_in,
        point.tokens_out,
        point.cost_micro_usd,
    )
    with Session(engine) as session:
        rows = session.exec(
            select(AgentTranscript)
            .where(AgentTranscript.id == point.transcript.transcript_id)
            .order_by(col(AgentTranscript.step))
        ).all()
    assert [(1, None), (2, "chat-model"), (3, None), (4, "chat-model")] == [
        (row.step, row.model) for row in rows
    ]
    assert {handle.id} == {row.workflow_id for row in rows}
    stored = AgentActivities(engine, gateway).load_transcript(
        LoadTranscriptInput(transcript=point.transcript)
    )
    assert ["system", "user", "assistant", "tool", "assistant"] == [
        m["role"] for m in stored.messages
    ]
    # ...and not in history: neither the model's interim text nor the system prompt.
    history = await history_bytes(handle)
    assert b"FINAL-ANSWER" in history  # the answer is the result: the check can see payloads
    assert b"TRANSCRIPT-MARKER" not in history
    assert PROMPT_LINE.encode() not in history
    assert point.transcript.transcript_id.encode() in history

    with Session(engine) as session:
        ledger = session.exec(select(ModelCall).where(ModelCall.case_id == handle.id)).all()
    assert [("agent", "chat", "ok", TURN_MICRO_USD)] * 2 == [
        (row.task, row.provider, row.outcome, row.cost_micro_usd) for row in ledger
    ]
    assert [
        "agent_started",
        "agent_step",
        "agent_tool_ran",
        "agent_step",
        "agent_finished",
    ] == actions(engine, handle.id)
    await replays(handle, "completed")


# --- (b) a tool that is not on the allowlist ----------------------------------------------------


async def test_a_tool_off_the_allowlist_is_refused_audited_and_told(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        tool_calls(
            ("issue_goodwill_credit", {"amount_cents": 1_000, "reason": "late delivery"}),
            ("delete_customer", {"customer_id": "C-1002"}),
        ),
        answer("A colleague will look into a credit for you."),
    )
    handle = await start(time_env, worker, tools=["lookup_order_status", "create_ticket_note"])
    result = await handle.result()

    assert AgentOutcome.COMPLETED == result.outcome
    assert [
        ("issue_goodwill_credit", ToolCallStatus.REFUSED),
        ("delete_customer", ToolCallStatus.REFUSED),
    ] == [(call.name, call.status) for call in result.tool_calls]
    assert [] == credits(engine, handle.id)
    first, second = fake.requests
    assert ["lookup_order_status", "create_ticket_note"] == tool_names(first)
    told = tool_messages(second)
    assert call_ids(second) == list(told)
    assert ["tool_not_allowed"] * 2 == [message["error"] for message in told.values()]
    assert (
        "use only: lookup_order_status, create_ticket_note" in next(iter(told.values()))["message"]
    )
    refused = [e for e in audit(engine, handle.id) if e.action == "agent_tool_refused"]
    assert [("agent", "issue_goodwill_credit"), ("agent", "delete_customer")] == [
        (e.actor, e.detail["tool"]) for e in refused
    ]
    assert "agent_tool_ran" not in actions(engine, handle.id)


async def test_a_tool_the_policy_file_does_not_list_is_refused(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI, tmp_path: Path
) -> None:
    policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_bytes())
    policy["allowed_agent_tools"] = ["lookup_order_status", "create_ticket_note"]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    document = load_policy(path)
    shipped = load_policy(DEFAULT_POLICY_FILE).allowed_agent_tools
    assert set(shipped) <= set(TOOLS), "the shipped policy names tools the agent has"
    # The caller's own list is narrowed to the policy's: issue_goodwill_credit is dropped.
    tools = document.agent_tools(["issue_goodwill_credit", "lookup_order_status"])
    assert ["lookup_order_status"] == tools
    fake.enqueue(
        tool_calls(("issue_goodwill_credit", {"amount_cents": 1_000, "reason": "late delivery"})),
        answer("A colleague will look into a credit for you."),
    )
    handle = await start(time_env, worker, tools=document.agent_tools())
    result = await handle.result()

    assert [("issue_goodwill_credit", ToolCallStatus.REFUSED)] == [
        (call.name, call.status) for call in result.tool_calls
    ]
    assert ["lookup_order_status", "create_ticket_note"] == tool_names(fake.requests[0])
    assert [] == credits(engine, handle.id)


# --- (c) a risky tool waits for a person --------------------------------------------------------


def credit_request(amount_cents: int = 1_500) -> Scripted:
    return tool_calls(
        (
            "issue_goodwill_credit",
            {"amount_cents": amount_cents, "reason": "late delivery", "order_id": "O-5003"},
        )
    )


async def test_a_risky_tool_runs_once_approved(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(credit_request(), answer("I have credited $15.00 to your account."))
    handle = await start(time_env, worker)
    state = await awaiting_approval(handle)

    assert state.approval is not None
    assert ("tool-1-1", ["team_lead"], 1_500, "agent-desk") == (
        state.approval.request_id,
        state.approval.awaiting_roles,
        state.approval.amount_cents,
        state.approval.requested_by,
    )
    assert (1, []) == (fake.request_count, credits(engine, handle.id))
    # Four-eyes: whoever started the assist may not approve its tool calls.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await decide(handle, approver="agent-desk", approver_roles=["team_lead"])
    assert "four-eyes: 'agent-desk' requested this" in str(refused.value.cause)

    decision = await decide(handle, decision_id="d-ok", **LEAD)
    result = await handle.result()

    assert (GateStatus.APPROVED, "d-ok", True) == (
        decision.gate,
        decision.decision_id,
        decision.approved,
    )
    assert AgentOutcome.COMPLETED == result.outcome
    [credit] = credits(engine, handle.id)
    assert (1_500, "O-5003", "C-1002", "lead@acme.test") == (
        credit.amount_cents,
        credit.order_id,
        credit.customer_id,
        credit.approved_by,
    )
    [told] = tool_messages(fake.requests[1]).values()
    assert (credit.credit_id, True) == (told["credit_id"], told["created"])
    assert [("issue_goodwill_credit", ToolCallStatus.OK, "tool-1-1")] == [
        (c.name, c.status, c.approval_request_id) for c in result.tool_calls
    ]
    events = actions(engine, handle.id)
    assert events.index("agent_tool_approval_requested") < events.index("approval_decided")
    assert events.index("approval_decided") < events.index("agent_tool_ran")
    ran = next(e for e in audit(engine, handle.id) if e.action == "agent_tool_ran")
    assert "lead@acme.test" == ran.actor
    await replays(handle, "risky_tool_approved")


async def test_an_approver_may_lower_the_credit(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(credit_request(4_000), answer("I have credited $25.00 to your account."))
    handle = await start(time_env, worker)
    await awaiting_approval(handle)
    await decide(handle, action="request_changes", new_amount_cents=2_500, **LEAD)

    assert AgentOutcome.COMPLETED == (await handle.result()).outcome
    assert [2_500] == [credit.amount_cents for credit in credits(engine, handle.id)]


async def test_a_rejected_risky_tool_is_not_run_and_the_model_is_told(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(credit_request(), answer("A colleague will follow up about a credit."))
    handle = await start(time_env, worker)
    await awaiting_approval(handle)
    decision = await decide(handle, action="reject", reason="order arrived on time", **LEAD)
    result = await handle.result()

    assert (GateStatus.REJECTED, False) == (decision.gate, decision.approved)
    assert AgentOutcome.COMPLETED == result.outcome
    assert [] == credits(engine, handle.id)
    [told] = tool_messages(fake.requests[1]).values()
    assert "denied" == told["error"]
    assert "rejected by a person: order arrived on time" in told["message"]
    assert [ToolCallStatus.DENIED] == [call.status for call in result.tool_calls]
    denied = next(e for e in audit(engine, handle.id) if e.action == "agent_tool_denied")
    assert ("lead@acme.test", "rejected") == (denied.actor, denied.detail["status"])
    assert "agent_tool_ran" not in actions(engine, handle.id)
    await replays(handle, "risky_tool_rejected")


async def test_an_unanswered_approval_expires_and_the_tool_is_denied(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(credit_request(), answer("A colleague will follow up about a credit."))
    handle = await start(time_env, worker)
    await awaiting_approval(handle)
    result = await handle.result()  # time skips past the 24-hour deadline

    assert (AgentOutcome.COMPLETED, [ToolCallStatus.DENIED]) == (
        result.outcome,
        [call.status for call in result.tool_calls],
    )
    assert [] == credits(engine, handle.id)
    [told] = tool_messages(fake.requests[1]).values()
    assert "no decision before the approval deadline" in told["message"]
    events = actions(engine, handle.id)
    assert ["approval_reminder_sent", "approval_escalated", "approval_expired"] == [
        e for e in events if e.startswith("approval_") and e != "approval_requested"
    ]


# --- (d) bounds ---------------------------------------------------------------------------------


async def test_step_limit(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        tool_calls(("lookup_order_status", {"order_id": "O-5003"})),
        tool_calls(("lookup_order_status", {"order_id": "O-5004"})),
        answer("never asked"),
    )
    handle = await start(time_env, worker, limits=AgentLimits(max_steps=2))
    result = await handle.result()

    assert (AgentOutcome.STEP_LIMIT, None, 2) == (
        result.outcome,
        result.answer,
        result.checkpoint.steps,
    )
    assert "the tool calls of the last step were not run" in result.reason
    assert (2, 1) == (fake.request_count, fake.pending)
    assert 1 == actions(engine, handle.id).count("agent_tool_ran")
    finished = audit(engine, handle.id)[-1]
    assert ("agent_finished", "step_limit") == (finished.action, finished.detail["outcome"])
    await replays(handle, "step_limit")


@pytest.mark.parametrize(
    ("limits", "spent"),
    [
        (AgentLimits(max_tokens=200), "240 tokens used of 200"),
        (AgentLimits(max_cost_usd=0.002), "$0.0032 spent of $0.0020"),
    ],
    ids=["tokens", "cost"],
)
async def test_budget_exhausted(
    time_env: WorkflowEnvironment,
    worker: Worker,
    engine: Engine,
    fake: FakeOpenAI,
    limits: AgentLimits,
    spent: str,
) -> None:
    fake.enqueue(
        tool_calls(("lookup_order_status", {"order_id": "O-5003"})),
        tool_calls(("create_ticket_note", {"note": "customer asked twice"})),
        answer("never asked"),
    )
    handle = await start(time_env, worker, limits=limits)
    result = await handle.result()

    assert AgentOutcome.BUDGET_EXHAUSTED == result.outcome
    assert result.reason.startswith(spent)
    assert (2, 240, 2 * TURN_MICRO_USD) == (
        fake.request_count,
        result.checkpoint.tokens,
        result.checkpoint.cost_micro_usd,
    )
    # The second step's note was not written: its result could not be read by anyone.
    assert ["agent_tool_ran"] == [
        a for a in actions(engine, handle.id) if a.startswith("agent_tool")
    ]
    with Session(engine) as session:
        assert session.exec(select(Ticket).where(Ticket.case_id == handle.id)).first() is None


# --- (e) continue-as-new ------------------------------------------------------------------------


async def test_continue_as_new_keeps_the_transcript_reference_and_totals(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        tool_calls(("lookup_order_status", {"order_id": "O-5003"})),
        tool_calls(("create_ticket_note", {"note": "told the customer O-5003 was delivered"})),
        answer("Your order O-5003 was delivered."),
    )
    handle = await start(time_env, worker, limits=AgentLimits(continue_after_steps=1))
    result = await handle.result()

    point = result.checkpoint
    assert (AgentOutcome.COMPLETED, 3, 3, 6) == (
        result.outcome,
        point.runs,
        point.steps,
        point.transcript.step,
    )
    assert (300, 60, 3 * TURN_MICRO_USD) == (
        point.tokens_in,
        point.tokens_out,
        point.cost_micro_usd,
    )
    assert ["lookup_order_status", "create_ticket_note"] == [c.name for c in result.tool_calls]
    # The last run's model read the whole conversation, written by the two runs before it.
    assert ["system", "user", "assistant", "tool", "assistant", "tool"] == [
        m["role"] for m in fake.requests[2].messages
    ]
    first_run = time_env.client.get_workflow_handle(handle.id, run_id=handle.result_run_id)
    events = (await first_run.fetch_history()).events
    assert events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    assert (await first_run.describe()).run_id != (await handle.describe()).run_id
    # The audit trail continues across runs: no record lost to a reused idempotency key.
    assert [
        "agent_started",
        "agent_step",
        "agent_tool_ran",
        "agent_step",
        "agent_tool_ran",
        "agent_step",
        "agent_finished",
    ] == actions(engine, handle.id)
    with Session(engine) as session:
        ticket = session.exec(select(Ticket).where(Ticket.case_id == handle.id)).one()
    assert ["[agent] told the customer O-5003 was delivered"] == ticket.notes
    await replays(handle, "continued_as_new-run1", handle.result_run_id)
    await replays(handle, "continued_as_new-run3")


# --- (f) invalid arguments ----------------------------------------------------------------------


async def test_invalid_arguments_are_reported_to_the_model_not_run(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        tool_calls(
            ("issue_goodwill_credit", {"amount_cents": 100_000, "reason": "very late"}),
            ("lookup_order_status", "{not json"),
            ("lookup_order_status", {"order_id": "O-5001"}),  # valid, but another customer's
        ),
        answer("I could not find that order on your account."),
    )
    handle = await start(time_env, worker)
    result = await handle.result()

    assert AgentOutcome.COMPLETED == result.outcome
    assert [
        ToolCallStatus.INVALID_ARGUMENTS,
        ToolCallStatus.INVALID_ARGUMENTS,
        ToolCallStatus.OK,
    ] == [call.status for call in result.tool_calls]
    told = list(tool_messages(fake.requests[1]).values())
    assert ["invalid_arguments", "invalid_arguments"] == [m["error"] for m in told[:2]]
    assert "amount_cents: Input should be less than or equal to 5000" in told[0]["message"]
    assert (False, "no order O-5001 on this customer's account") == (
        told[2]["found"],
        told[2]["problem"],
    )
    # The invalid credit never reached an approver, let alone the credits table.
    assert [] == credits(engine, handle.id)
    events = actions(engine, handle.id)
    assert 2 == events.count("agent_tool_invalid_arguments")
    assert "agent_tool_approval_requested" not in events
    assert (await state_of(handle)).approval is None
    await replays(handle, "invalid_arguments")


# --- needs_human --------------------------------------------------------------------------------


async def test_a_model_error_hands_the_case_to_a_person(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(Scripted(status=400, body={"error": {"message": "tools are not supported"}}))
    handle = await start(time_env, worker)
    result = await handle.result()

    assert (AgentOutcome.NEEDS_HUMAN, 0) == (result.outcome, result.checkpoint.steps)
    assert "HTTP 400: tools are not supported" in result.reason
    assert 1 == fake.request_count  # 4xx: no retry
    assert "agent_model_failed" in actions(engine, handle.id)


async def test_an_unavailable_model_is_retried_after_its_retry_after(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine, fake: FakeOpenAI
) -> None:
    fake.enqueue(
        Scripted(status=503, headers={"Retry-After": "20"}, body={"error": "overloaded"}),
        answer("Your order O-5003 was delivered."),
    )
    handle = await start(time_env, worker)
    result = await handle.result()

    assert (AgentOutcome.COMPLETED, 1) == (result.outcome, result.checkpoint.steps)
    assert 2 == fake.request_count
    with Session(engine) as session:
        ledger = session.exec(select(ModelCall).where(ModelCall.case_id == handle.id)).all()
    assert ["failed", "ok"] == [row.outcome for row in ledger]


async def test_without_a_chat_model_the_case_fails_fast_to_a_person(
    time_env: WorkflowEnvironment,
    engine: Engine,
    models: EmbeddedModels,
    tmp_path: Path,
) -> None:
    gateway = ModelGateway.from_file(models_file(tmp_path, None), models)
    try:
        async with running_worker(time_env, engine, gateway) as worker:
            handle = await start(time_env, worker)
            result = await handle.result()
    finally:
        gateway.close()

    assert AgentOutcome.NEEDS_HUMAN == result.outcome
    assert result.reason.startswith("no chat model is configured for agents")
    finished = audit(engine, handle.id)[-1]
    assert ("agent_finished", "needs_human") == (finished.action, finished.detail["outcome"])
    await replays(handle, "needs_human")


# --- the model-turn activity on its own ---------------------------------------------------------


async def test_a_retried_step_answers_with_the_stored_reply(
    gateway: ModelGateway, engine: Engine, fake: FakeOpenAI
) -> None:
    """An attempt that stored the reply but failed to report it is not asked (or paid) again."""
    agent = AgentActivities(engine, gateway)
    env = ActivityEnvironment()
    ref = await asyncio.to_thread(
        env.run,
        agent.store_transcript,
        StoreTranscriptInput(
            transcript=TranscriptRef(transcript_id=uuid.uuid4().hex),
            workflow_id="wf-1",
            messages=[{"role": "user", "content": QUESTION}],
            prompt="agent_assist",
        ),
    )
    fake.enqueue(tool_calls(("lookup_order_status", {"order_id": "O-5003"})))
    step = AgentStepInput(transcript=ref, workflow_id="wf-1", case_id="case-1")
    first = await asyncio.to_thread(env.run, agent.agent_next_step, step)
    again = await asyncio.to_thread(env.run, agent.agent_next_step, step)

    assert (False, True) == (first.replayed, again.replayed)
    assert first.model_dump(exclude={"replayed"}) == again.model_dump(exclude={"replayed"})
    assert (1, 2) == (fake.request_count, again.transcript.step)
    assert [] == fake.requests[0].body.get("tools", [])
