"""Human handoff on the time-skipping test server: a person answers, or re-routes the case to
another process (a real `knowledge_answer` case opened by the starter's own `start`), and a case
nobody takes expires. The knowledge base, notification, audit and decision activities are the
real ones on a temporary SQLite database; triage is the tests' deterministic fake.

`PODIUM_RECORD_HANDOFF_HISTORIES=1 pytest tests/test_handoff.py` (re)writes the committed
`tests/histories/handoff-*.json` that `test_replay.py` replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.knowledge import CaseRouter, KnowledgeActivities
from core.db import AuditEvent, Message
from core.settings import Settings
from tests.helpers import (
    commands_answering_signal,
    customer_message,
    fake_triage,
    history_recording,
    make_worker,
    parked,
    real_system_activities,
    seeded_engine,
    signed,
)
from tests.test_knowledge_answer import knowledge
from worker import case_opener, workflow_runner
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult
from workflows.handoff.types import (
    HandoffInput,
    HandoffOutcome,
    HandoffPolicy,
    HandoffResult,
    HandoffState,
    HandoffStatus,
)
from workflows.knowledge_answer.types import KnowledgeAnswerOutcome, KnowledgeAnswerResult
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, HandoffResult]
HISTORIES = Path(__file__).parent / "histories"
ROOT = Path(__file__).resolve().parent.parent
RECORD = history_recording("PODIUM_RECORD_HANDOFF_HISTORIES")
AGENT = {"approver": "lee.wong@example.com", "approver_roles": ["support_agent"]}
ANGRY = (
    "I am really unhappy. I returned a jacket a month ago and nobody tells me anything. "
    "I want to speak to a person, not a bot."
)
QUESTION = "Can I return swimwear if I opened it?"


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


_STARTED: list[Handle] = []


@pytest.fixture
async def worker(time_env: WorkflowEnvironment, engine: Engine) -> AsyncIterator[Worker]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        activities = KnowledgeActivities(knowledge())
        router = CaseRouter(case_opener(Settings(_env_file=None)))  # type: ignore[call-arg]
        worker = make_worker(
            time_env.client,
            [
                *real_system_activities(engine),
                fake_triage,
                activities.search_knowledge,
                activities.brief_handoff,
                router.route_case,
            ],
            executor,
        )
        async with worker:
            yield worker
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start(env: WorkflowEnvironment, worker: Worker, message: str) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "handoff",
        HandoffInput(
            message=message,
            customer_id="C-1002",
            channel="chat",
            reason="customer asked for a person",
            requested_by="chat-bot@example.com",
            policy=HandoffPolicy(digest="test-policy"),
        ),
        id=f"handoff-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=HandoffResult,
    )
    _STARTED.append(handle)
    return handle


async def waiting(handle: Handle) -> HandoffState:
    for _ in range(500):
        state = await handle.query("get_state", result_type=HandoffState)
        if state.status == HandoffStatus.AWAITING_PERSON:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"case never reached the inbox; last {state.status}")


def replies(engine: Engine, case_id: str) -> list[Message]:
    with Session(engine) as session:
        query = select(Message).where(Message.case_id == case_id, Message.kind == "customer_reply")
        return list(session.exec(query))


def audit_trail(engine: Engine, case_id: str) -> list[AuditEvent]:
    with Session(engine) as session:
        query = (
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(col(AuditEvent.seq))
        )
        return list(session.exec(query))


async def replays(handle: Handle, path: str) -> None:
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
    if name := RECORD(path):
        text = history.to_json().replace(str(ROOT), "podium")
        (HISTORIES / f"handoff-{name}.json").write_text(text)


def decision(action: str, **extra: Any) -> ApprovalDecisionInput:
    return ApprovalDecisionInput(request_id="handoff-1", action=action, **AGENT, **extra)


async def test_the_inbox_shows_summary_intent_sentiment_and_a_reply_the_person_sends(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, ANGRY)
    state = await waiting(handle)
    assert ("refund_request", "negative") == (state.intent, state.sentiment)
    assert state.summary and "returned a jacket" in state.summary
    assert state.suggested_reply
    assert ["agent_assist", "knowledge_answer"] == state.routes
    assert state.approval is not None and ["support_agent"] == state.approval.awaiting_roles
    for _ in range(500):  # the gate sets the inbox's attributes once it parks
        attributes = (await handle.describe()).typed_search_attributes
        if attributes.get(sa.AWAITING_APPROVAL):
            break
        await asyncio.sleep(0.02)
    assert (True, ["support_agent"], "refund_request") == (
        attributes.get(sa.AWAITING_APPROVAL),
        attributes.get(sa.AWAITING_ROLES),
        attributes.get(sa.INTENT),
    )
    assert [] == replies(engine, handle.id)
    card = PROCESSES.get("handoff").approval_card(None, state)
    assert ("refund_request", "negative") == (card.ai.intent, card.ai.sentiment)

    reply = "I am sorry for the wait: your refund for the jacket was issued today."
    decided = await handle.execute_update(
        "decide",
        signed(handle.id, decision("approve", comment=reply)),
        result_type=ApprovalDecisionResult,
    )
    assert ("approved", "answered") == (decided.gate, decided.outcome)
    result = await handle.result()
    assert (HandoffOutcome.ANSWERED, "lee.wong@example.com") == (result.outcome, result.handled_by)
    (sent,) = replies(engine, handle.id)
    assert reply == sent.body
    trail = audit_trail(engine, handle.id)
    assert [
        "handoff_requested",
        "handoff_briefed",
        "approval_requested",
        "approval_decided",
        "reply_sent",
        "handoff_finished",
    ] == [event.action for event in trail]
    reply_sent = trail[4]
    assert ("lee.wong@example.com", "person") == (reply_sent.actor, reply_sent.detail["written_by"])
    assert reply not in str(reply_sent.detail)  # the reply by message id (the outbox has it)
    await replays(handle, "answered")


async def test_the_person_reads_what_the_customer_wrote_while_the_case_waited(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, ANGRY)
    await waiting(handle)
    await parked(handle)
    again = customer_message("msg-handoff-2", "It has been two weeks. Please call me back.")
    await handle.signal("customer_message", again)
    await handle.signal("customer_message", again)  # the intake sent it twice: kept once
    for _ in range(500):
        state = await handle.query("get_state", result_type=HandoffState)
        if state.customer_messages:
            break
        await asyncio.sleep(0.02)
    assert [("msg-handoff-2", "chat", again.text)] == [
        (joined.message_id, joined.channel, joined.text) for joined in state.customer_messages
    ]
    assert HandoffStatus.AWAITING_PERSON == state.status
    card = PROCESSES.get("handoff").approval_card(None, state)
    wrote = [fact.value for fact in card.facts if fact.label == "Customer wrote again"]
    assert 1 == len(wrote) and again.text in wrote[0] and "msg-handoff-2" in wrote[0]
    # The signal's workflow task issued no command: histories recorded before it replay.
    history = await handle.fetch_history()
    assert [] == commands_answering_signal(history, "customer_message")

    await handle.execute_update(
        "decide", signed(handle.id, decision("approve", comment="We will call you today."))
    )
    assert HandoffOutcome.ANSWERED == (await handle.result()).outcome
    trail = audit_trail(engine, handle.id)
    noted = [e.detail["customer_wrote_again"] for e in trail if "customer_wrote_again" in e.detail]
    assert [["msg-handoff-2"]] == noted  # by id, in the next audit event, once
    assert again.text not in str([event.detail for event in trail])
    attributes = (await handle.describe()).typed_search_attributes
    assert again.text not in str([pair.value for pair in attributes])
    await replays(handle, "customer_wrote_again")


async def test_a_person_reroutes_the_case_to_another_process(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, QUESTION)
    await waiting(handle)
    # A route the policy does not name is refused before it reaches history.
    with pytest.raises(WorkflowUpdateFailedError) as unknown:
        await handle.execute_update(
            "decide", signed(handle.id, decision("reject", reason="route:refund"))
        )
    assert "not a process this case may be routed to" in str(unknown.value.cause)
    decided = await handle.execute_update(
        "decide",
        signed(handle.id, decision("reject", reason="route:knowledge_answer")),
        result_type=ApprovalDecisionResult,
    )
    assert "rerouted" == decided.outcome
    result = await handle.result()
    assert HandoffOutcome.REROUTED == result.outcome
    assert result.routed_to is not None and result.routed_to.startswith("knowledge_answer-")
    assert result.routed_to == decided.effects["routed_to"]
    assert [] == replies(engine, handle.id)
    rerouted = audit_trail(engine, handle.id)[-2]
    assert ("case_rerouted", "knowledge_answer", result.routed_to) == (
        rerouted.action,
        rerouted.detail["process"],
        rerouted.detail["routed_case_id"],
    )
    # The other process runs the case with the message: answered from the knowledge base.
    routed = time_env.client.get_workflow_handle(
        result.routed_to, result_type=KnowledgeAnswerResult
    )
    answered = await routed.result()
    assert (KnowledgeAnswerOutcome.ANSWERED, ["KB-101"]) == (answered.outcome, answered.sources)
    assert "lee.wong@example.com" == audit_trail(engine, result.routed_to)[0].actor
    await replays(handle, "rerouted")


async def test_a_person_closes_it_with_a_reason_and_nothing_is_sent(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, ANGRY)
    await waiting(handle)
    await handle.execute_update(
        "decide", signed(handle.id, decision("reject", reason="duplicate of another case"))
    )
    result = await handle.result()
    assert (HandoffOutcome.CLOSED, "duplicate of another case") == (result.outcome, result.reason)
    assert [] == replies(engine, handle.id)
    await replays(handle, "closed")


async def test_a_case_nobody_takes_expires_and_is_escalated(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, ANGRY)
    await waiting(handle)
    for _ in range(60):  # 48 hours to the deadline, an hour at a time
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            break
        await time_env.sleep(timedelta(hours=1))
    result = await handle.result()
    assert HandoffOutcome.EXPIRED == result.outcome
    assert (await handle.describe()).typed_search_attributes.get(sa.ESCALATED)
    assert [] == replies(engine, handle.id)
    await replays(handle, "expired")
