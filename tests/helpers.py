"""Test doubles and builders shared by the workflow tests.

Model activities are replaced by deterministic fakes registered under the real activity names;
the systems-of-record, notification and audit activities are the real ones on a temporary
SQLite database.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities
from activities.notifications import NotificationActivities
from activities.systems import SystemsOfRecordActivities
from activities.types import (
    DraftReplyInput,
    DraftReplyResult,
    Intent,
    Sentiment,
    TriageInput,
    TriageResult,
)
from core.db import create_tables, make_engine
from core.seed import seed_demo_data
from worker import WORKFLOWS, workflow_runner

ORDER_RE = re.compile(r"\bO-\d+\b")


@activity.defn(name="triage_request")
def fake_triage(input: TriageInput) -> TriageResult:
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
        workflows=list(WORKFLOWS),
        activities=list(activities),
        activity_executor=executor,
        workflow_runner=workflow_runner(),
    )
