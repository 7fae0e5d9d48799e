"""Test doubles and builders shared by the workflow tests.

Model activities are replaced by deterministic fakes registered under the real activity names;
the systems-of-record, notification and audit activities are the real ones on a temporary
SQLite database. Receipt reading (`read_document`, `extract_fields`) is the real embedded OCR
and extraction: `document_activities`.
"""

from __future__ import annotations

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
from temporalio.client import Client
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
from activities.policy import evaluate_policy
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
        evaluate_policy,
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
