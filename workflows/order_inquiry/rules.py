"""The delayed-order rules: pure functions, deterministic, unit tested.

From the order (its promised date and value), the carrier's tracking, the customer's message
(sentiment), earlier inquiries and whether an exception is asked for, the policy answers: on
time (the estimated date), late within the grace (the new date), late beyond it (a goodwill
credit within the automatic limit), delivered already, or a person decides.
"""

from __future__ import annotations

from datetime import datetime

from workflows.contracts.carrier import ShipmentStatus, ShipmentTracking
from workflows.contracts.orders import InquiryOrder
from workflows.order_inquiry.types import (
    OrderInquiryDecision,
    OrderInquiryPolicy,
    Route,
)

__all__ = ["assess_inquiry", "format_amount", "late_days", "slipped"]


def format_amount(cents: int, currency: str = "USD") -> str:
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{cents / 100:,.2f}"


def late_days(promised_by: datetime | None, expected: datetime | None, now: datetime) -> int:
    """Whole days the parcel arrives after the promise (0 when on time). With no estimate
    from the carrier, today counts as the earliest it can arrive."""
    if promised_by is None:
        return 0
    arrival = max(expected, now) if expected is not None else now
    return max(0, (arrival.date() - promised_by.date()).days)


def slipped(given: datetime | None, tracking: ShipmentTracking, now: datetime) -> bool:
    """Whether the parcel will arrive later than the date the customer was given."""
    if tracking.status == ShipmentStatus.DELIVERED:
        return False
    expected = tracking.estimated_delivery
    if given is None:
        return False
    return expected is None or expected.date() > given.date() or now.date() > given.date()


def assess_inquiry(
    *,
    order: InquiryOrder,
    tracking: ShipmentTracking,
    policy: OrderInquiryPolicy,
    now: datetime,
    sentiment_score: float,
    exception_requested: bool,
) -> OrderInquiryDecision:
    if tracking.status == ShipmentStatus.DELIVERED or order.delivered_at is not None:
        return OrderInquiryDecision(
            route=Route.DELIVERED,
            late_days=0,
            credit_cents=0,
            reasons=["the carrier has delivered the parcel"],
        )
    days = late_days(order.promised_by, tracking.estimated_delivery, now)
    reasons: list[str] = []
    if days == 0:
        reasons.append("on time: the carrier expects it by the promised date")
    elif days <= policy.grace_days:
        reasons.append(f"late by {days} days, within the {policy.grace_days}-day grace")
    else:
        reasons.append(f"late by {days} days, beyond the {policy.grace_days}-day grace")
    # Per late day beyond the grace: up to the automatic limit, or proposed to a person up to
    # theirs.
    per_days = policy.credit_per_late_day_cents * days if days > policy.grace_days else 0

    person: list[str] = []
    if order.amount_cents >= policy.high_value_cents:
        person.append(
            f"high value: {format_amount(order.amount_cents, order.currency)} is at or over "
            f"{format_amount(policy.high_value_cents, order.currency)}"
        )
    if order.earlier_inquiries >= policy.repeat_complaints:
        person.append(f"repeat complaint: {order.earlier_inquiries} earlier inquiries")
    if sentiment_score <= policy.angry_sentiment_score:
        person.append(f"an angry message (sentiment {sentiment_score:.2f})")
    if exception_requested:
        person.append("the customer asks for an exception")
    if tracking.status == ShipmentStatus.EXCEPTION:
        person.append(f"the carrier reports a problem ({tracking.last_event or 'exception'})")
    if person:
        credit = min(per_days, policy.person_credit_limit_cents)
        return OrderInquiryDecision(
            route=Route.PERSON, late_days=days, credit_cents=credit, reasons=reasons + person
        )
    credit = min(per_days, policy.auto_credit_limit_cents)
    if days == 0:
        route = Route.ON_TIME
    elif credit == 0:
        route = Route.LATE
    else:
        route = Route.CREDIT
        reasons.append(
            f"goodwill credit of {format_amount(credit, order.currency)} ({days} days at "
            f"{format_amount(policy.credit_per_late_day_cents, order.currency)}, at most "
            f"{format_amount(policy.auto_credit_limit_cents, order.currency)})"
        )
    return OrderInquiryDecision(route=route, late_days=days, credit_cents=credit, reasons=reasons)
