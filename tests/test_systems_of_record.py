"""The systems-of-record activities against SQLite and a real PostgreSQL.

Every test runs on both backends: SQLite in the test's temporary folder, PostgreSQL in a fresh
database on the session's private server (`tests/postgres.py`; skipped when it is not installed).
Activities run inside `ActivityEnvironment`, so `activity.logger` and the activity context work as
they do on a worker. The race tests start the same activity on several threads at once, the way
a retry that overlaps a slow first attempt, or two cases about one order, reach the database.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditActivities
from activities.notifications import ESCALATION_RECIPIENT, NotificationActivities
from activities.systems import SystemsOfRecordActivities
from activities.types import (
    AuditEventInput,
    CustomerStanding,
    CustomerTier,
    IssueRefundInput,
    LookupOrderInput,
    NotifyEscalationInput,
    OpenTicketInput,
    OrderStatus,
    SendReplyInput,
    TicketStatus,
    UpdateTicketInput,
)
from core.db import AuditEvent, Message, Order, Refund, Ticket, create_tables, make_engine
from core.seed import seed_demo_data
from tests.postgres import scratch_database

T = TypeVar("T")

# Microseconds on purpose: both backends must hand back exactly what was stored.
SEEDED_AT = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
DAY = timedelta(days=1)
RACERS = 8
RACE_TIMEOUT_S = 60


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A seeded systems-of-record database of the test's own, on each backend."""
    if request.param == "sqlite":
        yield from _seeded(f"sqlite:///{tmp_path / 'podium.db'}")
    else:
        server: str = request.getfixturevalue("postgres_url")
        with scratch_database(server) as url:
            yield from _seeded(url)


def _seeded(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    try:
        create_tables(engine)
        assert seed_demo_data(engine, now=SEEDED_AT)
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def systems(engine: Engine) -> SystemsOfRecordActivities:
    return SystemsOfRecordActivities(engine)


@pytest.fixture
def notifications(engine: Engine) -> NotificationActivities:
    return NotificationActivities(engine)


@pytest.fixture
def audit(engine: Engine) -> AuditActivities:
    return AuditActivities(engine)


def run(fn: Callable[[Any], T], input: Any) -> T:
    """Call an activity the way a worker would, with an activity context."""
    return ActivityEnvironment().run(fn, input)


def count(engine: Engine, table: type[SQLModel]) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)).one()


def race(fn: Callable[[Any], T], inputs: list[Any]) -> list[T | BaseException]:
    """Start `fn` once per input, all at the same moment; the result or exception of each."""
    barrier = threading.Barrier(len(inputs), timeout=RACE_TIMEOUT_S)

    def attempt(input: Any) -> T | BaseException:
        barrier.wait()
        try:
            return run(fn, input)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(inputs)) as pool:
        futures = [pool.submit(attempt, input) for input in inputs]
        return [future.result(timeout=RACE_TIMEOUT_S) for future in futures]


def refund_input(
    key: str = "case-1/refund", order_id: str = "O-5001", **overrides: Any
) -> IssueRefundInput:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "case_id": key.split("/", 1)[0],
        "order_id": order_id,
        "customer_id": "C-1001",
        "amount_cents": 4_900,
        "reason": "arrived broken",
    }
    return IssueRefundInput(**(fields | overrides))


def ticket_input(case_id: str = "case-1") -> OpenTicketInput:
    return OpenTicketInput(
        idempotency_key=f"{case_id}/ticket",
        case_id=case_id,
        customer_id="C-1001",
        order_id="O-5001",
        subject="Refund request",
        channel="email",
    )


def assert_utc(value: datetime | None, expected: datetime) -> None:
    assert value is not None
    assert timedelta(0) == value.utcoffset()
    assert expected == value


# --- lookup_order -------------------------------------------------------------------------------


def test_lookup_order_returns_customer_and_order_with_utc_dates(
    systems: SystemsOfRecordActivities,
) -> None:
    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-1001", order_id="O-5001"))

    assert result.problem is None
    assert result.customer is not None and result.order is not None
    assert "C-1001" == result.customer.customer_id
    assert "ada@example.com" == result.customer.email
    assert CustomerTier.GOLD == result.customer.tier
    assert CustomerStanding.GOOD == result.customer.standing
    order = result.order
    assert ("O-5001", "C-1001", 4_900, "USD") == (
        order.order_id,
        order.customer_id,
        order.amount_cents,
        order.currency,
    )
    assert OrderStatus.DELIVERED == order.status
    assert_utc(order.ordered_at, SEEDED_AT - 10 * DAY)
    assert_utc(order.promised_by, SEEDED_AT - 5 * DAY)
    assert_utc(order.shipped_at, SEEDED_AT - 8 * DAY)
    assert_utc(order.delivered_at, SEEDED_AT - 6 * DAY)
    assert order.refunded is False


def test_lookup_order_keeps_standing_and_missing_dates(
    systems: SystemsOfRecordActivities,
) -> None:
    watched = run(systems.lookup_order, LookupOrderInput(customer_id="C-1004", order_id="O-5007"))
    pending = run(systems.lookup_order, LookupOrderInput(customer_id="C-1003", order_id="O-5005"))

    assert watched.customer is not None
    assert CustomerStanding.WATCH == watched.customer.standing
    assert pending.customer is not None and pending.order is not None
    assert CustomerTier.PLATINUM == pending.customer.tier
    assert OrderStatus.PROCESSING == pending.order.status
    assert_utc(pending.order.promised_by, SEEDED_AT + 4 * DAY)
    assert pending.order.shipped_at is None
    assert pending.order.delivered_at is None


def test_lookup_order_unknown_customer(systems: SystemsOfRecordActivities) -> None:
    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-404", order_id="O-5001"))

    assert "unknown customer C-404" == result.problem
    assert result.customer is None
    assert result.order is None


def test_lookup_order_unknown_order(systems: SystemsOfRecordActivities) -> None:
    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-1001", order_id="O-404"))

    assert "unknown order O-404" == result.problem
    assert result.customer is not None
    assert "C-1001" == result.customer.customer_id
    assert result.order is None


def test_lookup_order_of_another_customer(systems: SystemsOfRecordActivities) -> None:
    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-1001", order_id="O-5003"))

    assert "order O-5003 does not belong to customer C-1001" == result.problem
    assert result.customer is not None
    assert result.order is None


@pytest.mark.parametrize("order_id", [None, ""])
def test_lookup_order_without_order_id(
    systems: SystemsOfRecordActivities, order_id: str | None
) -> None:
    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-1002", order_id=order_id))

    assert "no order id was given or found in the message" == result.problem
    assert result.customer is not None
    assert "C-1002" == result.customer.customer_id
    assert result.order is None


def test_lookup_order_reports_refunded_after_a_refund(
    systems: SystemsOfRecordActivities,
) -> None:
    run(systems.issue_refund, refund_input())

    result = run(systems.lookup_order, LookupOrderInput(customer_id="C-1001", order_id="O-5001"))

    assert result.order is not None
    assert result.order.refunded is True
    assert OrderStatus.REFUNDED == result.order.status
    other = run(systems.lookup_order, LookupOrderInput(customer_id="C-1001", order_id="O-5002"))
    assert other.order is not None
    assert other.order.refunded is False


# --- issue_refund -------------------------------------------------------------------------------


def test_issue_refund_creates_one_refund(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    result = run(systems.issue_refund, refund_input())

    assert result.created is True
    assert 4_900 == result.amount_cents
    with Session(engine) as session:
        refund = session.exec(select(Refund)).one()
        order = session.get(Order, "O-5001")
    assert result.refund_id == refund.refund_id
    assert ("case-1/refund", "case-1", "O-5001", "C-1001") == (
        refund.idempotency_key,
        refund.case_id,
        refund.order_id,
        refund.customer_id,
    )
    assert order is not None
    assert OrderStatus.REFUNDED == order.status


def test_issue_refund_retry_with_the_same_key_returns_the_first_refund(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    first = run(systems.issue_refund, refund_input())
    retry = run(systems.issue_refund, refund_input())

    assert first.created is True
    assert retry.created is False
    assert first.refund_id == retry.refund_id
    assert first.amount_cents == retry.amount_cents
    assert 1 == count(engine, Refund)


def test_issue_refund_with_another_key_for_the_same_order_is_refused(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    run(systems.issue_refund, refund_input("case-1/refund"))

    with pytest.raises(ApplicationError) as caught:
        run(systems.issue_refund, refund_input("case-2/refund"))

    assert "AlreadyRefunded" == caught.value.type
    assert caught.value.non_retryable is True
    assert "by case case-1" in str(caught.value)
    assert 1 == count(engine, Refund)


def test_issue_refund_for_an_unknown_order_is_refused(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    with pytest.raises(ApplicationError) as caught:
        run(systems.issue_refund, refund_input(order_id="O-404"))

    assert "UnknownOrder" == caught.value.type
    assert caught.value.non_retryable is True
    assert 0 == count(engine, Refund)


def test_concurrent_refunds_with_the_same_key_issue_one_refund(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    results = race(systems.issue_refund, [refund_input()] * RACERS)

    errors = [result for result in results if isinstance(result, BaseException)]
    assert [] == errors
    refunds = [result for result in results if not isinstance(result, BaseException)]
    assert 1 == len({refund.refund_id for refund in refunds})
    assert [True] == [refund.created for refund in refunds if refund.created]
    assert 1 == count(engine, Refund)


def test_concurrent_refunds_with_different_keys_for_one_order_issue_one_refund(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    inputs = [refund_input(f"case-{n}/refund") for n in range(RACERS)]

    results = race(systems.issue_refund, inputs)

    refunds = [result for result in results if not isinstance(result, BaseException)]
    errors = [result for result in results if isinstance(result, BaseException)]
    assert 1 == len(refunds)
    assert refunds[0].created is True
    assert [("AlreadyRefunded", True)] * (RACERS - 1) == [
        (getattr(error, "type", repr(error)), getattr(error, "non_retryable", None))
        for error in errors
    ]
    with Session(engine) as session:
        refund = session.exec(select(Refund)).one()
    assert refunds[0].refund_id == refund.refund_id


# --- tickets ------------------------------------------------------------------------------------


def test_open_ticket_twice_returns_the_same_ticket(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    first = run(systems.open_ticket, ticket_input())
    retry = run(systems.open_ticket, ticket_input())

    assert first == retry
    assert TicketStatus.OPEN == first.status
    assert first.escalated is False
    assert 1 == count(engine, Ticket)
    other = run(systems.open_ticket, ticket_input("case-2"))
    assert first.ticket_id != other.ticket_id


def test_concurrent_open_ticket_opens_one_ticket(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    results = race(systems.open_ticket, [ticket_input()] * RACERS)

    assert [] == [result for result in results if isinstance(result, BaseException)]
    assert 1 == len(
        {result.ticket_id for result in results if not isinstance(result, BaseException)}
    )
    assert 1 == count(engine, Ticket)


def test_update_ticket_appends_a_note_once_when_retried(
    systems: SystemsOfRecordActivities, engine: Engine
) -> None:
    opened = run(systems.open_ticket, ticket_input())
    update = UpdateTicketInput(
        case_id="case-1",
        status=TicketStatus.ESCALATED,
        note="approval overdue",
        escalated=True,
    )

    first = run(systems.update_ticket, update)
    retry = run(systems.update_ticket, update)
    later = run(
        systems.update_ticket,
        UpdateTicketInput(case_id="case-1", status=TicketStatus.RESOLVED, note="refunded"),
    )

    assert opened.ticket_id == first.ticket_id == retry.ticket_id == later.ticket_id
    assert (TicketStatus.ESCALATED, True) == (first.status, first.escalated)
    assert first == retry
    # Leaving `escalated` out keeps the flag as it was.
    assert (TicketStatus.RESOLVED, True) == (later.status, later.escalated)
    with Session(engine) as session:
        ticket = session.exec(select(Ticket)).one()
    assert ["approval overdue", "refunded"] == ticket.notes
    assert ticket.escalated is True


def test_update_ticket_for_an_unknown_case_is_refused(
    systems: SystemsOfRecordActivities,
) -> None:
    update = UpdateTicketInput(case_id="case-404", status=TicketStatus.CLOSED, note="done")

    with pytest.raises(ApplicationError) as caught:
        run(systems.update_ticket, update)

    assert "UnknownTicket" == caught.value.type
    assert caught.value.non_retryable is True


# --- notifications and audit --------------------------------------------------------------------


def test_send_reply_is_idempotent_per_key(
    notifications: NotificationActivities, engine: Engine
) -> None:
    reply = SendReplyInput(
        idempotency_key="case-1/reply",
        case_id="case-1",
        customer_id="C-1001",
        channel="email",
        text="Your refund is on its way.",
    )

    first = run(notifications.send_reply, reply)
    retry = run(notifications.send_reply, reply)
    other = run(notifications.send_reply, reply.model_copy(update={"idempotency_key": "case-1/2"}))

    assert (True, False, True) == (first.created, retry.created, other.created)
    assert first.message_id == retry.message_id
    assert first.message_id != other.message_id
    with Session(engine) as session:
        messages = session.exec(select(Message).order_by(Message.id)).all()
    assert 2 == len(messages)
    assert ("customer_reply", "ada@example.com") == (messages[0].kind, messages[0].recipient)


def test_notify_escalation_is_idempotent_per_key(
    notifications: NotificationActivities, engine: Engine
) -> None:
    notice = NotifyEscalationInput(
        idempotency_key="case-1/escalate",
        case_id="case-1",
        reason="approval overdue",
        amount_cents=34_900,
        waiting_since=SEEDED_AT,
    )

    first = run(notifications.notify_escalation, notice)
    retry = run(notifications.notify_escalation, notice)

    assert (True, False) == (first.notified, retry.notified)
    with Session(engine) as session:
        message = session.exec(select(Message)).one()
    assert ("escalation", ESCALATION_RECIPIENT) == (message.kind, message.recipient)
    assert SEEDED_AT.isoformat() in message.body


def test_concurrent_send_reply_queues_one_message(
    notifications: NotificationActivities, engine: Engine
) -> None:
    reply = SendReplyInput(
        idempotency_key="case-1/reply",
        case_id="case-1",
        customer_id="C-1001",
        channel="email",
        text="Your refund is on its way.",
    )

    results = race(notifications.send_reply, [reply] * RACERS)

    assert [] == [result for result in results if isinstance(result, BaseException)]
    assert 1 == len(
        {result.message_id for result in results if not isinstance(result, BaseException)}
    )
    assert 1 == count(engine, Message)


def test_record_audit_event_is_idempotent_per_key(audit: AuditActivities, engine: Engine) -> None:
    event = AuditEventInput(
        idempotency_key="case-1/decided",
        case_id="case-1",
        process="refund",
        action="refund_decided",
        actor="podium",
        detail={"decision": "auto_approve", "amount_cents": 4_900, "rules": ["under_limit"]},
        occurred_at=SEEDED_AT,
    )

    first = run(audit.record_audit_event, event)
    retry = run(audit.record_audit_event, event)
    other = run(audit.record_audit_event, event.model_copy(update={"idempotency_key": "case-1/x"}))

    assert (True, False, True) == (first.created, retry.created, other.created)
    assert first.event_id == retry.event_id
    assert first.event_id != other.event_id
    with Session(engine) as session:
        stored = session.get(AuditEvent, first.event_id)
    assert stored is not None
    assert event.detail == stored.detail
    assert 2 == count(engine, AuditEvent)
