"""The benchmark's own systems-of-record data: one customer and one order per case.

Generated per run with a fixed seed, relative to now: every order was delivered on time a few
days ago (inside the return window) to a customer in good standing, so the amount alone decides
the path: under the automatic limit the case refunds itself, over it a person must approve.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.db import Customer, Order, Refund, utcnow

__all__ = ["BenchCase", "count_refunds", "refund_message", "seed_cases"]

TIERS = ("standard", "gold", "platinum")
# Clear refund requests, each naming the order: the embedded triage must read them as
# `refund_request` with enough confidence for the automatic path.
MESSAGES = (
    "Hi, I'd like a refund for order {order}, it arrived damaged.",
    "Please refund order {order}. The item arrived broken and I want my money back.",
    "I want a refund for {order}: the product was damaged when it arrived.",
    "Order {order} came broken. Can I get my money back, please?",
)


@dataclass(frozen=True)
class BenchCase:
    case_id: str
    customer_id: str
    order_id: str
    amount_cents: int
    message: str


def refund_message(index: int, order_id: str) -> str:
    return MESSAGES[index % len(MESSAGES)].format(order=order_id)


def seed_cases(
    engine: Engine,
    *,
    label: str,
    first_number: int,
    count: int,
    min_cents: int,
    max_cents: int,
    rng: random.Random,
    now: datetime | None = None,
    tiers: tuple[str, ...] = TIERS,
) -> list[BenchCase]:
    """Insert `count` customers with one delivered order each.

    Orders are numbered from `first_number` (`O-600000`, the form triage recognises in a
    message); case ids are `bench-<label>-<i>`. Customers take `tiers` in turn.
    """
    now = now or utcnow()
    day = timedelta(days=1)
    cases: list[BenchCase] = []
    with Session(engine) as session:
        for i in range(count):
            customer_id = f"C-{first_number + i}"
            order_id = f"O-{first_number + i}"
            amount = rng.randint(min_cents, max_cents)
            delivered_days_ago = rng.randint(1, 10)
            delivered = now - delivered_days_ago * day
            session.add(
                Customer(
                    id=customer_id,
                    name=f"Bench Customer {first_number + i}",
                    email=f"{customer_id.lower()}@bench.podium.test",
                    tier=tiers[i % len(tiers)],
                    standing="good",
                )
            )
            session.add(
                Order(
                    id=order_id,
                    customer_id=customer_id,
                    amount_cents=amount,
                    status="delivered",
                    ordered_at=delivered - 5 * day,
                    promised_by=delivered + 1 * day,
                    shipped_at=delivered - 3 * day,
                    delivered_at=delivered,
                )
            )
            cases.append(
                BenchCase(
                    case_id=f"bench-{label}-{i:05d}",
                    customer_id=customer_id,
                    order_id=order_id,
                    amount_cents=amount,
                    message=refund_message(i, order_id),
                )
            )
        session.commit()
    return cases


def count_refunds(engine: Engine, case_ids: list[str]) -> int:
    with Session(engine) as session:
        statement = (
            select(func.count()).select_from(Refund).where(col(Refund.case_id).in_(case_ids))
        )
        return int(session.exec(statement).one())
