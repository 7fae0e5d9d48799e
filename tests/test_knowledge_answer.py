"""Knowledge answer on the time-skipping test server: every path, against the real knowledge
base (`knowledge/`, BM25 and embeddings) and the real notification, audit and decision
activities on a temporary SQLite database.

`PODIUM_RECORD_KNOWLEDGE_ANSWER_HISTORIES=1 pytest tests/test_knowledge_answer.py` (re)writes the
committed `tests/histories/knowledge_answer-*.json` that `test_replay.py` replays: only for a
deliberate, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.knowledge import KnowledgeActivities, KnowledgeBase
from bench.knowledge import QUESTIONS, evaluate
from core.db import AuditEvent, Message
from tests.helpers import (
    commands_answering_signal,
    customer_message,
    history_recording,
    make_worker,
    parked,
    real_system_activities,
    seeded_engine,
    signed,
)
from worker import workflow_runner
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalDecisionResult
from workflows.knowledge_answer.types import (
    KnowledgeAnswerInput,
    KnowledgeAnswerOutcome,
    KnowledgeAnswerPolicy,
    KnowledgeAnswerResult,
    KnowledgeAnswerState,
    KnowledgeAnswerStatus,
)
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, KnowledgeAnswerResult]
HISTORIES = Path(__file__).parent / "histories"
ROOT = Path(__file__).resolve().parent.parent
RECORD = history_recording("PODIUM_RECORD_KNOWLEDGE_ANSWER_HISTORIES")
AGENT = {"approver": "lee.wong@example.com", "approver_roles": ["support_agent"]}
SURE = "Can I return swimwear if I opened it?"
UNSURE = "Where is my order? It should have come yesterday"


@cache
def knowledge() -> KnowledgeBase:
    return KnowledgeBase.load()


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
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), activities.search_knowledge],
            executor,
        )
        async with worker:
            yield worker
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def start(env: WorkflowEnvironment, worker: Worker, question: str, **policy: Any) -> Handle:
    handle: Handle = await env.client.start_workflow(
        "knowledge_answer",
        KnowledgeAnswerInput(
            question=question,
            customer_id="C-1001",
            channel="chat",
            requested_by="chat-bot@example.com",
            policy=KnowledgeAnswerPolicy(digest="test-policy", **policy),
        ),
        id=f"knowledge_answer-test-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=KnowledgeAnswerResult,
    )
    _STARTED.append(handle)
    return handle


async def wait_for(handle: Handle, status: KnowledgeAnswerStatus) -> KnowledgeAnswerState:
    for _ in range(500):
        state = await handle.query("get_state", result_type=KnowledgeAnswerState)
        if state.status == status:
            return state
        await asyncio.sleep(0.02)
    raise AssertionError(f"case never reached {status}; last {state.status}")


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
        (HISTORIES / f"knowledge_answer-{name}.json").write_text(text)


def decision(action: str, **extra: Any) -> ApprovalDecisionInput:
    return ApprovalDecisionInput(request_id="review-1", action=action, **AGENT, **extra)


# --- retrieval ------------------------------------------------------------------------------


def test_retrieval_finds_the_labelled_document_of_most_questions() -> None:
    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line]
    report = evaluate(knowledge(), questions, threshold=0.45)
    assert report["questions"] >= 40
    assert report["hit_at_1"] >= 0.8, report["misses"]
    assert report["hit_at_3"] >= 0.9, report["misses"]
    # A question the knowledge base cannot answer never goes out without a person.
    assert 1.0 == report["unanswerable_sent_to_a_person"]


def test_an_answer_comes_from_its_document_in_its_own_words() -> None:
    found = knowledge().search(SURE)
    assert "KB-101" == found.hits[0].doc_id
    assert "hygiene seal" in found.answer
    assert found.confidence >= 0.45
    nothing = knowledge().search("What is the capital of Mongolia?")
    assert ([], 0.0, "") == (nothing.hits, nothing.confidence, nothing.answer)


# --- the process ----------------------------------------------------------------------------


async def test_a_sure_answer_is_sent_with_its_source_and_no_person(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, SURE)
    result = await handle.result()
    assert (KnowledgeAnswerOutcome.ANSWERED, True, ["KB-101"]) == (
        result.outcome,
        result.automated,
        result.sources,
    )
    (reply,) = replies(engine, handle.id)
    assert "hygiene seal" in reply.body
    assert reply.body.endswith("Source: [KB-101] Returns policy")
    assert result.reply_message_id == f"M-{reply.id}"
    trail = audit_trail(engine, handle.id)
    assert ["question_received", "knowledge_searched", "reply_sent", "question_finished"] == [
        event.action for event in trail
    ]
    searched = trail[1].detail
    assert "KB-101" == searched["sources"][0]["doc_id"] and searched["sure"]
    # The question stays out of the audit trail and the search attributes.
    assert all("swimwear" not in json.dumps(event.detail) for event in trail)
    described = await handle.describe()
    attributes = described.typed_search_attributes
    assert ("knowledge_answer", "answered", "completed", "knowledge_question") == (
        attributes.get(sa.PROCESS),
        attributes.get(sa.OUTCOME),
        attributes.get(sa.STATUS),
        attributes.get(sa.INTENT),
    )
    assert "test-policy" == attributes.get(sa.POLICY_VERSION)
    await replays(handle, "answered")


async def test_an_unsure_answer_waits_for_a_person_who_approves_it(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, UNSURE)
    state = await wait_for(handle, KnowledgeAnswerStatus.AWAITING_REVIEW)
    assert state.confidence is not None and state.confidence < 0.45
    assert state.hits and state.suggested_answer
    assert state.approval is not None and ["support_agent"] == state.approval.awaiting_roles
    assert [] == replies(engine, handle.id)  # nothing goes out before a person checked it
    for _ in range(500):  # the gate sets the inbox's attributes once it parks
        attributes = (await handle.describe()).typed_search_attributes
        if attributes.get(sa.AWAITING_APPROVAL):
            break
        await asyncio.sleep(0.02)
    assert (True, ["support_agent"]) == (
        attributes.get(sa.AWAITING_APPROVAL),
        attributes.get(sa.AWAITING_ROLES),
    )
    # Four-eyes: whoever asked may not approve; a decision without a token is refused.
    requester = {"approver": "chat-bot@example.com", "approver_roles": ["support_agent"]}
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update(
            "decide",
            signed(
                handle.id,
                ApprovalDecisionInput(request_id="review-1", action="approve", **requester),
            ),
        )
    with pytest.raises(WorkflowUpdateFailedError):
        await handle.execute_update("decide", decision("approve"))
    decided = await handle.execute_update(
        "decide",
        signed(handle.id, decision("approve", comment="checked")),
        result_type=ApprovalDecisionResult,
    )
    assert ("approved", "answered_after_review") == (decided.gate, decided.outcome)
    result = await handle.result()
    assert (KnowledgeAnswerOutcome.ANSWERED_AFTER_REVIEW, False) == (
        result.outcome,
        result.automated,
    )
    (reply,) = replies(engine, handle.id)
    top = state.hits[0]
    assert reply.body.endswith(f"Source: [{top.doc_id}] {top.title}")
    actions = [event.action for event in audit_trail(engine, handle.id)]
    assert {"approval_requested", "approval_decided", "reply_sent"} <= set(actions)
    await replays(handle, "reviewed_answered")


async def test_an_unsure_answer_a_person_rejects_is_not_sent(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, UNSURE)
    await wait_for(handle, KnowledgeAnswerStatus.AWAITING_REVIEW)
    with pytest.raises(WorkflowUpdateFailedError):  # a rejection needs a reason
        await handle.execute_update("decide", signed(handle.id, decision("reject")))
    await handle.execute_update(
        "decide", signed(handle.id, decision("reject", reason="needs the order's tracking"))
    )
    result = await handle.result()
    assert (KnowledgeAnswerOutcome.NOT_ANSWERED, "needs the order's tracking", []) == (
        result.outcome,
        result.reason,
        result.sources,
    )
    assert [] == replies(engine, handle.id)
    await replays(handle, "review_rejected")


async def test_the_customer_writes_again_while_a_person_reviews_the_answer(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, UNSURE)
    await wait_for(handle, KnowledgeAnswerStatus.AWAITING_REVIEW)
    await parked(handle)
    again = customer_message("msg-knowledge-2", "Hello? My order still has not come.")
    await handle.signal("customer_message", again)
    for _ in range(500):
        state = await handle.query("get_state", result_type=KnowledgeAnswerState)
        if state.customer_messages:
            break
        await asyncio.sleep(0.02)
    # Its reference, not its words: the reviewer checks the answer to the question asked.
    assert [("msg-knowledge-2", "chat", "order_status", None)] == [
        (joined.message_id, joined.channel, joined.intent, joined.text)
        for joined in state.customer_messages
    ]
    assert KnowledgeAnswerStatus.AWAITING_REVIEW == state.status
    card = PROCESSES.get("knowledge_answer").approval_card(None, state)
    wrote = [fact.value for fact in card.facts if fact.label == "Customer wrote again"]
    assert 1 == len(wrote) and "msg-knowledge-2" in wrote[0]
    history = await handle.fetch_history()
    assert [] == commands_answering_signal(history, "customer_message")

    await handle.execute_update(
        "decide", signed(handle.id, decision("reject", reason="needs the order's tracking"))
    )
    assert KnowledgeAnswerOutcome.NOT_ANSWERED == (await handle.result()).outcome
    trail = audit_trail(engine, handle.id)
    noted = [e.detail["customer_wrote_again"] for e in trail if "customer_wrote_again" in e.detail]
    assert [["msg-knowledge-2"]] == noted
    assert again.text not in str([event.detail for event in trail])
    await replays(handle, "customer_wrote_again")


async def test_an_unanswerable_question_nobody_checks_expires_unsent(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start(time_env, worker, "Who won the football match last night?")
    state = await wait_for(handle, KnowledgeAnswerStatus.AWAITING_REVIEW)
    assert state.approval is not None
    for _ in range(30):  # 24 hours to the deadline, an hour at a time
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            break
        await time_env.sleep(timedelta(hours=1))
    result = await handle.result()
    assert KnowledgeAnswerOutcome.REVIEW_EXPIRED == result.outcome
    assert [] == replies(engine, handle.id)
    assert (await handle.describe()).typed_search_attributes.get(sa.ESCALATED)
    await replays(handle, "review_expired")
