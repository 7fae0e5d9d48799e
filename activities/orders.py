"""Order activities for customer-service inquiries: the order as an inquiry needs it (nothing
personal about the customer) and how often it was asked about before.

Synchronous database reads, run on the worker's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from temporalio import activity

from core.db import Customer, Order, Ticket
from workflows.contracts.orders import InquiryOrder, LookupInquiryOrderInput

__all__ = ["OrderInquiryActivities"]


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back naive; everything Podium stores is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class OrderInquiryActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def activities(self) -> list[Callable[..., Any]]:
        return [self.lookup_inquiry_order]

    @activity.defn(name="lookup_inquiry_order")
    def lookup_inquiry_order(self, input: LookupInquiryOrderInput) -> InquiryOrder:
        with Session(self._engine) as session:
            customer = session.get(Customer, input.customer_id)
            if customer is None:
                return InquiryOrder(found=False, problem=f"unknown customer {input.customer_id}")
            if not input.order_id:
                return InquiryOrder(
                    found=False, problem="no order id was given or found in the message"
                )
            order = session.get(Order, input.order_id)
            if order is None or order.customer_id != customer.id:
                return InquiryOrder(
                    found=False,
                    problem=f"no order {input.order_id} on customer {customer.id}'s account",
                )
            since = input.since.astimezone(UTC)
            earlier = session.exec(
                select(func.count())
                .select_from(Ticket)
                .where(
                    Ticket.order_id == order.id,
                    Ticket.customer_id == customer.id,
                    Ticket.case_id != input.case_id,
                    col(Ticket.created_at) >= since,
                )
            ).one()
            return InquiryOrder(
                found=True,
                order_id=order.id,
                amount_cents=order.amount_cents,
                currency=order.currency,
                status=order.status,
                promised_by=_aware(order.promised_by),
                delivered_at=_aware(order.delivered_at),
                customer_tier=customer.tier,
                customer_standing=customer.standing,
                earlier_inquiries=int(earlier),
            )
