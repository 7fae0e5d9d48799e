"""Unit tests for the refund eligibility and autonomy rules (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.types import (
    CustomerInfo,
    CustomerStanding,
    CustomerTier,
    Intent,
    OrderInfo,
    OrderStatus,
)
from workflows.refund.rules import assess_refund, format_amount
from workflows.refund.types import RefundPolicy, RiskLevel

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = RefundPolicy()


def customer(standing: CustomerStanding = CustomerStanding.GOOD) -> CustomerInfo:
    return CustomerInfo(
        customer_id="C-1", name="A", email="a@x.test", tier=CustomerTier.GOLD, standing=standing
    )


def order(
    *,
    amount: int = 5_000,
    status: OrderStatus = OrderStatus.DELIVERED,
    promised_ago: float = 5,
    delivered_ago: float | None = 6,
    refunded: bool = False,
) -> OrderInfo:
    return OrderInfo(
        order_id="O-1",
        customer_id="C-1",
        amount_cents=amount,
        currency="USD",
        status=status,
        ordered_at=NOW - 20 * DAY,
        promised_by=NOW - promised_ago * DAY,
        shipped_at=NOW - 10 * DAY,
        delivered_at=None if delivered_ago is None else NOW - delivered_ago * DAY,
        refunded=refunded,
    )


def assess(o: OrderInfo, c: CustomerInfo | None = None, intent=Intent.REFUND_REQUEST, conf=0.9):
    return assess_refund(
        order=o,
        customer=c or customer(),
        intent=intent,
        intent_confidence=conf,
        policy=POLICY,
        now=NOW,
    )


def test_small_recent_delivery_is_automatic() -> None:
    a = assess(order())
    assert (a.eligible, a.automatic, a.risk, a.recommendation) == (
        True,
        True,
        RiskLevel.LOW,
        "approve",
    )
    assert a.within_return_window and not a.late


def test_amount_at_the_limit_is_automatic_and_one_cent_over_is_not() -> None:
    assert assess(order(amount=10_000)).automatic
    over = assess(order(amount=10_001))
    assert not over.automatic
    assert over.risk == RiskLevel.MEDIUM
    assert "over the automatic limit of $100.00" in over.reasons[-1]


def test_large_amount_is_high_risk() -> None:
    assert assess(order(amount=50_001)).risk == RiskLevel.HIGH


def test_outside_return_window_is_not_eligible() -> None:
    a = assess(order(delivered_ago=45, promised_ago=44))
    assert not a.eligible and not a.automatic
    assert a.recommendation == "reject"
    assert "outside the 30-day return window" in a.reasons[0]


def test_late_delivery_is_eligible_even_outside_the_window() -> None:
    a = assess(order(delivered_ago=40, promised_ago=50))
    assert a.eligible and a.late and a.automatic


def test_shipped_late_and_undelivered_is_eligible() -> None:
    a = assess(order(status=OrderStatus.SHIPPED, delivered_ago=None, promised_ago=2))
    assert a.eligible and a.late


def test_in_transit_on_time_is_not_eligible() -> None:
    a = assess(order(status=OrderStatus.SHIPPED, delivered_ago=None, promised_ago=-3))
    assert not a.eligible and not a.late
    assert "in transit and on time" in a.reasons[0]


def test_unshipped_order_is_eligible() -> None:
    a = assess(order(status=OrderStatus.PROCESSING, delivered_ago=None, promised_ago=-3))
    assert a.eligible and a.automatic


def test_already_refunded_is_rejected_without_a_person() -> None:
    a = assess(order(refunded=True))
    assert not a.eligible and a.automatic_rejection and not a.automatic


@pytest.mark.parametrize("standing", [CustomerStanding.WATCH, CustomerStanding.BLOCKED])
def test_customer_not_in_good_standing_needs_a_person(standing: CustomerStanding) -> None:
    a = assess(order(), customer(standing))
    assert a.eligible and not a.automatic and a.risk == RiskLevel.HIGH
    assert f"standing is '{standing.value}'" in a.reasons[-1]


def test_unclear_intent_needs_a_person() -> None:
    a = assess(order(), conf=0.3)
    assert not a.automatic
    assert "intent confidence 0.30 is below 0.50" in a.reasons[-1]
    b = assess(order(), intent=Intent.COMPLAINT)
    assert not b.automatic and "not a refund request" in b.reasons[-1]


def test_holds_from_outside_the_rules_need_a_person() -> None:
    hold = "the receipt total $30.00 does not match the order amount $50.00"
    a = assess_refund(
        order=order(),
        customer=customer(),
        intent=Intent.REFUND_REQUEST,
        intent_confidence=0.9,
        policy=POLICY,
        now=NOW,
        holds=[hold],
    )
    assert a.eligible and not a.automatic and a.risk == RiskLevel.MEDIUM
    assert "approve" == a.recommendation
    assert hold == a.reasons[-1]
    assert assess(order()).automatic  # the same case without the hold


def test_format_amount() -> None:
    assert format_amount(129_900) == "$1,299.00"
    assert format_amount(5, "EUR") == "EUR 0.05"
