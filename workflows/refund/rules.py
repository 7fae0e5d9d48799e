"""Refund eligibility and autonomy rules: pure functions, deterministic, unit tested.

The workflow feeds them the facts it gathered (order, customer, triage) and the policy stamped
on the case; they answer whether the refund is eligible, whether Podium may act alone, the risk,
and the reasons in plain words for the audit trail and the approver.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from activities.types import CustomerInfo, CustomerStanding, Intent, OrderInfo, OrderStatus
from workflows.refund.types import RefundAssessment, RefundPolicy, RiskLevel

__all__ = ["assess_refund", "format_amount"]

# Above this multiple of the automatic limit a refund is high risk whoever asks.
HIGH_RISK_MULTIPLE = 5


def format_amount(cents: int, currency: str = "USD") -> str:
    symbol = "$" if currency == "USD" else f"{currency} "
    return f"{symbol}{cents / 100:,.2f}"


def assess_refund(
    *,
    order: OrderInfo,
    customer: CustomerInfo,
    intent: Intent,
    intent_confidence: float,
    policy: RefundPolicy,
    now: datetime,
    holds: Sequence[str] = (),
) -> RefundAssessment:
    """`holds`: reasons found outside these rules (a receipt that does not match the order, no
    model sure of the intent) that keep the refund from being automatic; a person decides."""
    amount = order.amount_cents
    reasons: list[str] = []
    window = timedelta(days=policy.return_window_days)
    delivered = order.delivered_at

    late = (delivered is not None and delivered > order.promised_by) or (
        delivered is None
        and order.status in (OrderStatus.PROCESSING, OrderStatus.SHIPPED)
        and now > order.promised_by
    )
    within_window = delivered is not None and now - delivered <= window
    automatic_rejection = False

    if order.refunded or order.status == OrderStatus.REFUNDED:
        eligible = False
        automatic_rejection = True
        reasons.append(f"order {order.order_id} has already been refunded")
    elif order.status == OrderStatus.CANCELLED:
        eligible = False
        reasons.append(f"order {order.order_id} was cancelled")
    elif order.status == OrderStatus.PROCESSING:
        eligible = True
        reasons.append("order has not shipped yet: the refund cancels it")
    elif delivered is not None:
        days = (now - delivered).days
        window_text = f"the {policy.return_window_days}-day return window"
        if late:
            eligible = True
            reasons.append(
                f"delivered late ({(delivered - order.promised_by).days} days after the promise)"
            )
        elif within_window:
            eligible = True
            reasons.append(f"delivered {days} days ago, within {window_text}")
        else:
            eligible = False
            reasons.append(f"delivered {days} days ago, outside {window_text}")
    elif late:
        eligible = True
        reasons.append(
            f"late: promised by {order.promised_by.date().isoformat()} and not delivered yet"
        )
    else:
        eligible = False
        reasons.append(f"in transit and on time (due by {order.promised_by.date().isoformat()})")

    automatic = eligible
    limit = policy.auto_refund_limit_cents
    if amount > limit:
        automatic = False
        reasons.append(
            f"amount {format_amount(amount, order.currency)} is over the automatic limit of "
            f"{format_amount(limit, order.currency)}"
        )
    if customer.standing != CustomerStanding.GOOD:
        automatic = False
        reasons.append(f"customer standing is '{customer.standing.value}'")
    if intent != Intent.REFUND_REQUEST:
        automatic = False
        reasons.append(f"the message reads as '{intent.value}', not a refund request")
    elif intent_confidence < policy.min_intent_confidence:
        automatic = False
        reasons.append(
            f"intent confidence {intent_confidence:.2f} is below {policy.min_intent_confidence:.2f}"
        )
    if holds:
        automatic = False
        reasons.extend(holds)

    if automatic:
        risk = RiskLevel.LOW
    elif customer.standing != CustomerStanding.GOOD or amount > HIGH_RISK_MULTIPLE * limit:
        risk = RiskLevel.HIGH
    else:
        risk = RiskLevel.MEDIUM

    return RefundAssessment(
        eligible=eligible,
        automatic=automatic,
        automatic_rejection=automatic_rejection,
        recommendation="approve" if eligible else "reject",
        risk=risk,
        amount_cents=amount,
        reasons=reasons,
        late=late,
        within_return_window=within_window,
    )
