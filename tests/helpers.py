"""Test doubles and builders shared by the workflow tests.

Model activities are replaced by deterministic fakes registered under the real activity names;
the systems-of-record, notification and audit activities are the real ones on a temporary
SQLite database. Receipt reading (`read_document`, `extract_fields`) is the real embedded OCR
and extraction: `document_activities`.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.worker import Worker

from activities.ai import IntelligenceActivities
from activities.audit import AuditActivities
from activities.decisions import DecisionVerifier
from activities.documents import DocumentStore
from activities.intelligence import EmbeddedModels
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from activities.intelligence.ocr import ReceiptReader
from activities.notifications import NotificationActivities
from activities.policy import PolicyActivities
from activities.systems import SystemsOfRecordActivities
from activities.types import (
    DraftReplyInput,
    DraftReplyResult,
    Intent,
    Sentiment,
    TriageInput,
    TriageResult,
)
from core.db import Order, create_tables, make_engine
from core.decision_tokens import DecisionKey
from core.seed import seed_demo_data
from core.settings import Settings
from worker import workflow_runner
from workflows.contracts.approval import ApprovalDecisionInput, decision_digest
from workflows.contracts.messages import CustomerMessage
from workflows.registry import PROCESSES

ORDER_RE = re.compile(r"\bO-\d+\b")


@activity.defn(name="triage_request")
def fake_triage(input: TriageInput) -> TriageResult:
    if "not sure" in input.text:
        # Every model of the chain answered below the threshold: a person reads the message.
        return TriageResult(
            intent=Intent.REFUND_REQUEST,
            intent_confidence=0.42,
            sentiment=Sentiment.NEUTRAL,
            sentiment_score=0.0,
            order_ids=ORDER_RE.findall(input.text),
            model="fake:premium",
            cost_usd=0.0021,
            tokens_in=800,
            tokens_out=40,
            needs_human=True,
            attempts=["small", "premium", "embedded"],
        )
    unclear = "unclear" in input.text
    return TriageResult(
        intent=Intent.OTHER if unclear else Intent.REFUND_REQUEST,
        intent_confidence=0.3 if unclear else 0.93,
        sentiment=Sentiment.NEGATIVE,
        sentiment_score=-0.4,
        order_ids=ORDER_RE.findall(input.text),
        model="fake:triage",
    )


@activity.defn(name="draft_reply")
def fake_draft(input: DraftReplyInput) -> DraftReplyResult:
    return DraftReplyResult(text=f"[{input.template}] Dear {input.customer_name}", model="fake")


def seeded_engine(tmp_path: Path, now: datetime | None = None) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    seed_demo_data(engine, now=now)
    return engine


def seed_orders(engine: Engine, now: datetime, orders: dict[str, tuple[str, int, str]]) -> None:
    """Delivered two days ago, within the return window: order id -> (customer, cents, currency).
    For the receipt fixtures, whose order ids the demo data does not have."""
    with Session(engine) as session:
        for order_id, (customer_id, amount_cents, currency) in orders.items():
            session.add(
                Order(
                    id=order_id,
                    customer_id=customer_id,
                    amount_cents=amount_cents,
                    currency=currency,
                    status="delivered",
                    ordered_at=now - timedelta(days=8),
                    promised_by=now - timedelta(days=2),
                    shipped_at=now - timedelta(days=5),
                    delivered_at=now - timedelta(days=2),
                )
            )
        session.commit()


@cache
def _embedded() -> tuple[EmbeddedModels, ReceiptReader]:
    # Trained / loaded once per test process: a second or two each.
    return EmbeddedModels.load(), ReceiptReader()


@contextmanager
def document_activities(engine: Engine) -> Iterator[list[Callable[..., Any]]]:
    """The real `read_document` (embedded OCR) and `extract_fields` on `engine`'s documents,
    ledger rows included."""
    models, reader = _embedded()
    gateway = ModelGateway.from_file(None, models, ledger=ModelLedger(engine))
    intelligence = IntelligenceActivities(
        models, gateway, documents=DocumentStore(engine), reader=reader
    )
    try:
        yield [intelligence.read_document, intelligence.extract_fields]
    finally:
        gateway.close()


def store_document(engine: Engine, data: bytes, content_type: str = "image/png") -> str:
    return DocumentStore(engine).put(data, content_type).document_id


def real_system_activities(engine: Engine) -> list[Callable[..., Any]]:
    systems = SystemsOfRecordActivities(engine)
    notifications = NotificationActivities(engine)
    audit = AuditActivities(engine)
    return [
        systems.lookup_order,
        systems.issue_refund,
        systems.open_ticket,
        systems.update_ticket,
        notifications.send_reply,
        notifications.notify_escalation,
        notifications.notify_approvers,
        audit.record_audit_event,
        DecisionVerifier(DecisionKey.from_settings(Settings(_env_file=None))).verify_decision,  # type: ignore[call-arg]
        PolicyActivities(engine).evaluate_policy,
    ]


def make_worker(
    client: Client,
    activities: Sequence[Callable[..., Any]],
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or f"tq-{uuid.uuid4().hex}",
        workflows=PROCESSES.workflows,
        activities=list(activities),
        activity_executor=executor,
        workflow_runner=workflow_runner(),
    )


def signed(case_id: str, decision: ApprovalDecisionInput) -> ApprovalDecisionInput:
    """The decision with the decision token the Podium API would mint for its approver and
    roles (the tests' key, `PODIUM_DECISION_SECRET`): what a case verifies before applying it."""
    key = DecisionKey.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    token = key.mint(
        subject=decision.approver,
        roles=list(decision.approver_roles),
        digest=decision_digest(case_id, decision),
    )
    return decision.model_copy(update={"credential": token})


def history_recording(variable: str) -> Callable[[str], str | None]:
    """Which recorded path a test writes to `tests/histories/`, and under which name.

    `<variable>=1` re-records every path under its own name (a deliberate, versioned change);
    `<variable>=automated=automated-audit_activity,...` records only the paths named, each under
    a new name, next to the histories of the cases started before the change. Unset: none.
    """
    import os

    value = os.environ.get(variable, "")
    if value == "1":
        return lambda path: path
    chosen = dict(pair.split("=", 1) for pair in value.split(",") if "=" in pair)
    return chosen.get


# History events that record a workflow's commands (one per command, right after the workflow
# task that issued them completed).
_COMMAND_EVENTS = frozenset(
    {
        "ACTIVITY_TASK_SCHEDULED",
        "TIMER_STARTED",
        "TIMER_CANCELED",
        "ACTIVITY_TASK_CANCEL_REQUESTED",
        "MARKER_RECORDED",
        "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES",
        "WORKFLOW_PROPERTIES_MODIFIED",
        "START_CHILD_WORKFLOW_EXECUTION_INITIATED",
        "SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
        "REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
        "WORKFLOW_EXECUTION_COMPLETED",
        "WORKFLOW_EXECUTION_FAILED",
        "WORKFLOW_EXECUTION_CONTINUED_AS_NEW",
    }
)


def commands_answering_signal(history: WorkflowHistory, signal: str) -> list[str]:
    """The commands of the workflow task that took the first `signal` of `history` (the test
    sends it while the case is parked, so that task took nothing else)."""
    events = list(history.events)
    kinds = [EventType.Name(event.event_type).removeprefix("EVENT_TYPE_") for event in events]
    signalled = next(
        i
        for i, event in enumerate(events)
        if kinds[i] == "WORKFLOW_EXECUTION_SIGNALED"
        and event.workflow_execution_signaled_event_attributes.signal_name == signal
    )
    completed = kinds.index("WORKFLOW_TASK_COMPLETED", signalled)
    commands = []
    for kind in kinds[completed + 1 :]:
        if kind not in _COMMAND_EVENTS:
            break
        commands.append(kind)
    return commands


async def parked(handle: WorkflowHandle[Any, Any], *, tries: int = 500) -> None:
    """Wait until the case waits on a durable timer with nothing else in flight: after its last
    command, which started that timer, only completed workflow tasks (a message sent now is the
    only news of its next task)."""
    for _ in range(tries):
        history = await handle.fetch_history()
        kinds = [event.event_type for event in history.events]
        last = [kind for kind in kinds if kind not in _WORKFLOW_TASK_EVENTS][-1]
        if last == EventType.EVENT_TYPE_TIMER_STARTED and kinds[-1] in _PARKED_LAST:
            return
        await asyncio.sleep(0.02)
    ending = [EventType.Name(kind) for kind in kinds[-4:]]
    raise AssertionError(f"the case never parked on a timer; its history ends {ending}")


_WORKFLOW_TASK_EVENTS = frozenset(
    {
        EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
        EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    }
)
_PARKED_LAST = frozenset(
    {EventType.EVENT_TYPE_TIMER_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED}
)


def customer_message(message_id: str, text: str, channel: str = "chat") -> CustomerMessage:
    """The payload the intake signals to a case when its customer writes again."""
    return CustomerMessage(
        message_id=message_id, channel=channel, text=text, intent="order_status", confidence=0.8
    )
