"""Activities that talk to the systems of record: orders, customers, refunds, tickets.

Blocking database work, so these are synchronous activities the worker runs on a thread pool.
Every write carries a business key; on a unique-key conflict the activity returns what the first
attempt wrote, so Temporal's retries never duplicate a refund or a ticket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.types import (
    CustomerInfo,
    CustomerStanding,
    CustomerTier,
    IssueRefundInput,
    IssueRefundResult,
    LookupOrderInput,
    LookupOrderResult,
    OpenTicketInput,
    OrderInfo,
    OrderStatus,
    TicketResult,
    TicketStatus,
    UpdateTicketInput,
)
from core.db import Customer, Order, Refund, Ticket, utcnow

__all__ = ["SystemsOfRecordActivities"]


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything Podium stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class SystemsOfRecordActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def activities(self) -> list[Callable[..., Any]]:
        """Every activity of this system, bound to its engine, for a worker to register."""
        return [self.lookup_order, self.issue_refund, self.open_ticket, self.update_ticket]

    @activity.defn(name="lookup_order")
    def lookup_order(self, input: LookupOrderInput) -> LookupOrderResult:
        with Session(self._engine) as session:
            customer = session.get(Customer, input.customer_id)
            if customer is None:
                return LookupOrderResult(problem=f"unknown customer {input.customer_id}")
            info = CustomerInfo(
                customer_id=customer.id,
                name=customer.name,
                email=customer.email,
                tier=CustomerTier(customer.tier),
                standing=CustomerStanding(customer.standing),
            )
            if not input.order_id:
                return LookupOrderResult(
                    customer=info, problem="no order id was given or found in the message"
                )
            order = session.get(Order, input.order_id)
            if order is None:
                return LookupOrderResult(customer=info, problem=f"unknown order {input.order_id}")
            if order.customer_id != customer.id:
                return LookupOrderResult(
                    customer=info,
                    problem=f"order {order.id} does not belong to customer {customer.id}",
                )
            refunded = (
                session.exec(select(Refund.id).where(Refund.order_id == order.id)).first()
                is not None
            )
            ordered_at = _aware(order.ordered_at)
            promised_by = _aware(order.promised_by)
            assert ordered_at is not None and promised_by is not None
            return LookupOrderResult(
                customer=info,
                order=OrderInfo(
                    order_id=order.id,
                    customer_id=order.customer_id,
                    amount_cents=order.amount_cents,
                    currency=order.currency,
                    status=OrderStatus(order.status),
                    ordered_at=ordered_at,
                    promised_by=promised_by,
                    shipped_at=_aware(order.shipped_at),
                    delivered_at=_aware(order.delivered_at),
                    refunded=refunded,
                ),
            )

    @activity.defn(name="issue_refund")
    def issue_refund(self, input: IssueRefundInput) -> IssueRefundResult:
        with Session(self._engine) as session:
            # Read the order before adding the refund: a query with the refund pending would
            # autoflush its INSERT outside the `try` below, so a retry's unique-key conflict (or
            # an unknown order's foreign key) would escape as a raw IntegrityError.
            order = session.get(Order, input.order_id)
            if order is None:
                raise ApplicationError(
                    f"order {input.order_id} does not exist",
                    type="UnknownOrder",
                    non_retryable=True,
                )
            refund = Refund(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                order_id=input.order_id,
                customer_id=input.customer_id,
                amount_cents=input.amount_cents,
                currency=input.currency,
                reason=input.reason,
            )
            session.add(refund)
            order.status = OrderStatus.REFUNDED.value
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = session.exec(
                    select(Refund).where(Refund.idempotency_key == input.idempotency_key)
                ).first()
                if existing is not None:
                    activity.logger.info("refund already issued for key %s", input.idempotency_key)
                    return IssueRefundResult(
                        refund_id=existing.refund_id,
                        amount_cents=existing.amount_cents,
                        created=False,
                    )
                other = session.exec(
                    select(Refund).where(Refund.order_id == input.order_id)
                ).first()
                raise ApplicationError(
                    f"order {input.order_id} was already refunded"
                    + (f" by case {other.case_id}" if other else ""),
                    type="AlreadyRefunded",
                    non_retryable=True,
                ) from None
            session.refresh(refund)
            return IssueRefundResult(
                refund_id=refund.refund_id, amount_cents=refund.amount_cents, created=True
            )

    @activity.defn(name="open_ticket")
    def open_ticket(self, input: OpenTicketInput) -> TicketResult:
        with Session(self._engine) as session:
            ticket = Ticket(
                case_id=input.case_id,
                customer_id=input.customer_id,
                order_id=input.order_id,
                subject=input.subject,
                channel=input.channel,
                notes=[],
            )
            session.add(ticket)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                found = session.exec(select(Ticket).where(Ticket.case_id == input.case_id)).first()
                if found is None:
                    raise
                ticket = found
            session.refresh(ticket)
            return TicketResult(
                ticket_id=ticket.ticket_id,
                status=TicketStatus(ticket.status),
                escalated=ticket.escalated,
            )

    @activity.defn(name="update_ticket")
    def update_ticket(self, input: UpdateTicketInput) -> TicketResult:
        with Session(self._engine) as session:
            ticket = session.exec(select(Ticket).where(Ticket.case_id == input.case_id)).first()
            if ticket is None:
                raise ApplicationError(
                    f"no ticket for case {input.case_id}", type="UnknownTicket", non_retryable=True
                )
            ticket.status = input.status.value
            if input.escalated is not None:
                ticket.escalated = input.escalated
            # A retried update must not add the same note twice.
            if not ticket.notes or ticket.notes[-1] != input.note:
                ticket.notes = [*ticket.notes, input.note]
            ticket.updated_at = utcnow()
            session.add(ticket)
            session.commit()
            session.refresh(ticket)
            return TicketResult(
                ticket_id=ticket.ticket_id,
                status=TicketStatus(ticket.status),
                escalated=ticket.escalated,
            )
