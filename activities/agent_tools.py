"""Customer-service tools an agent may call: activities on the systems of record.

Each takes `<Tool>Input` (the process's `ToolContext` plus the arguments the model wrote, already
validated by the agent loop against the same pydantic model) and answers with a small result the
model reads. The customer is the case's (`context.customer_id`), never one the model names: an
order of another customer is reported as not found.

- `lookup_order_status` (read-only): status, dates, late or not, refunded or not.
- `create_ticket_note` (safe): an internal note on the case's ticket, opened if needed; the same
  note twice in a row is written once.
- `issue_goodwill_credit` (risky: the process asks a person first): a credit on the account,
  once per idempotency key.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent_types import (
    CreateTicketNoteInput,
    CreateTicketNoteResult,
    IssueGoodwillCreditInput,
    IssueGoodwillCreditResult,
    LookupOrderStatusInput,
    LookupOrderStatusResult,
    ToolContext,
)
from core.db import Credit, Customer, Order, Refund, Ticket, utcnow

__all__ = ["AGENT_NOTE_PREFIX", "CustomerServiceTools"]

AGENT_NOTE_PREFIX = "[agent] "


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything Podium stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _customer_id(context: ToolContext) -> str:
    if not context.customer_id:
        raise ApplicationError("this case has no customer", type="NoCustomer", non_retryable=True)
    return context.customer_id


class CustomerServiceTools:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn(name="lookup_order_status")
    def lookup_order_status(self, input: LookupOrderStatusInput) -> LookupOrderStatusResult:
        order_id = input.arguments.order_id
        customer_id = _customer_id(input.context)
        with Session(self._engine) as session:
            order = session.get(Order, order_id)
            if order is None or order.customer_id != customer_id:
                return LookupOrderStatusResult(
                    found=False,
                    order_id=order_id,
                    problem=f"no order {order_id} on this customer's account",
                )
            refunded = (
                session.exec(select(Refund.id).where(Refund.order_id == order.id)).first()
                is not None
            )
        promised_by = _aware(order.promised_by)
        delivered_at = _aware(order.delivered_at)
        assert promised_by is not None
        late = (delivered_at or utcnow()) > promised_by
        return LookupOrderStatusResult(
            found=True,
            order_id=order.id,
            status=order.status,
            amount_cents=order.amount_cents,
            currency=order.currency,
            ordered_at=_aware(order.ordered_at),
            promised_by=promised_by,
            shipped_at=_aware(order.shipped_at),
            delivered_at=delivered_at,
            late=late if order.status not in ("cancelled", "refunded") else None,
            refunded=refunded,
        )

    @activity.defn(name="create_ticket_note")
    def create_ticket_note(self, input: CreateTicketNoteInput) -> CreateTicketNoteResult:
        context = input.context
        note = AGENT_NOTE_PREFIX + input.arguments.note.strip()
        with Session(self._engine) as session:
            ticket = session.exec(select(Ticket).where(Ticket.case_id == context.case_id)).first()
            if ticket is None:
                ticket = Ticket(
                    case_id=context.case_id,
                    customer_id=_customer_id(context),
                    subject="Agent assist",
                    channel="agent",
                    notes=[],
                )
                session.add(ticket)
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    found = session.exec(
                        select(Ticket).where(Ticket.case_id == context.case_id)
                    ).first()
                    if found is None:
                        raise
                    ticket = found
            # A retried call must not add the same note twice.
            if not ticket.notes or ticket.notes[-1] != note:
                ticket.notes = [*ticket.notes, note]
                ticket.updated_at = utcnow()
                session.add(ticket)
                session.commit()
            session.refresh(ticket)
            return CreateTicketNoteResult(ticket_id=ticket.ticket_id, notes=len(ticket.notes))

    @activity.defn(name="issue_goodwill_credit")
    def issue_goodwill_credit(self, input: IssueGoodwillCreditInput) -> IssueGoodwillCreditResult:
        context, arguments = input.context, input.arguments
        customer_id = _customer_id(context)
        with Session(self._engine) as session:
            existing = self._credit(session, context.idempotency_key)
            if existing is not None:
                return _credit_result(existing, created=False)
            if session.get(Customer, customer_id) is None:
                raise ApplicationError(
                    f"unknown customer {customer_id}", type="UnknownCustomer", non_retryable=True
                )
            currency = "USD"
            if arguments.order_id is not None:
                order = session.get(Order, arguments.order_id)
                if order is None or order.customer_id != customer_id:
                    raise ApplicationError(
                        f"no order {arguments.order_id} on this customer's account",
                        type="UnknownOrder",
                        non_retryable=True,
                    )
                currency = order.currency
            credit = Credit(
                idempotency_key=context.idempotency_key,
                case_id=context.case_id,
                customer_id=customer_id,
                order_id=arguments.order_id,
                amount_cents=arguments.amount_cents,
                currency=currency,
                reason=arguments.reason,
                approved_by=context.approved_by,
            )
            session.add(credit)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = self._credit(session, context.idempotency_key)
                if existing is None:
                    raise
                return _credit_result(existing, created=False)
            session.refresh(credit)
            return _credit_result(credit, created=True)

    @staticmethod
    def _credit(session: Session, key: str) -> Credit | None:
        return session.exec(select(Credit).where(Credit.idempotency_key == key)).first()


def _credit_result(credit: Credit, *, created: bool) -> IssueGoodwillCreditResult:
    return IssueGoodwillCreditResult(
        credit_id=credit.credit_id,
        amount_cents=credit.amount_cents,
        currency=credit.currency,
        created=created,
    )
