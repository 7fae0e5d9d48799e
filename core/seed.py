"""Demo systems-of-record data, seeded by `podium up` on first run.

Dates are relative to the moment of seeding so the demo cases behave the same whenever they run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from core.db import Customer, Order, utcnow

__all__ = ["DEMO_CUSTOMERS", "seed_demo_data"]

DEMO_CUSTOMERS: list[dict[str, str]] = [
    {"id": "C-1001", "name": "Ada Lovelace", "email": "ada@example.com", "tier": "gold"},
    {"id": "C-1002", "name": "Grace Hopper", "email": "grace@example.com", "tier": "standard"},
    {"id": "C-1003", "name": "Alan Turing", "email": "alan@example.com", "tier": "platinum"},
    {
        "id": "C-1004",
        "name": "Mallory Mischief",
        "email": "mallory@example.com",
        "tier": "standard",
        "standing": "watch",
    },
]


def _demo_orders(now: datetime) -> list[Order]:
    day = timedelta(days=1)
    return [
        # Delivered recently, small amount: refunded automatically.
        Order(
            id="O-5001",
            customer_id="C-1001",
            amount_cents=4_900,
            status="delivered",
            ordered_at=now - 10 * day,
            promised_by=now - 5 * day,
            shipped_at=now - 8 * day,
            delivered_at=now - 6 * day,
        ),
        # Delivered late: eligible, under the limit.
        Order(
            id="O-5002",
            customer_id="C-1001",
            amount_cents=8_999,
            status="delivered",
            ordered_at=now - 20 * day,
            promised_by=now - 12 * day,
            shipped_at=now - 15 * day,
            delivered_at=now - 5 * day,
        ),
        # Over the automatic limit: needs a person's approval.
        Order(
            id="O-5003",
            customer_id="C-1002",
            amount_cents=34_900,
            status="delivered",
            ordered_at=now - 9 * day,
            promised_by=now - 4 * day,
            shipped_at=now - 7 * day,
            delivered_at=now - 4 * day,
        ),
        # Shipped, late and still not delivered; large amount.
        Order(
            id="O-5004",
            customer_id="C-1002",
            amount_cents=129_900,
            status="shipped",
            ordered_at=now - 12 * day,
            promised_by=now - 3 * day,
            shipped_at=now - 10 * day,
        ),
        # Not shipped yet.
        Order(
            id="O-5005",
            customer_id="C-1003",
            amount_cents=2_500,
            status="processing",
            ordered_at=now - 1 * day,
            promised_by=now + 4 * day,
        ),
        # Delivered two months ago: outside the return window.
        Order(
            id="O-5006",
            customer_id="C-1003",
            amount_cents=12_000,
            status="delivered",
            ordered_at=now - 70 * day,
            promised_by=now - 62 * day,
            shipped_at=now - 66 * day,
            delivered_at=now - 60 * day,
        ),
        # Customer on watch: a person looks at every refund.
        Order(
            id="O-5007",
            customer_id="C-1004",
            amount_cents=3_500,
            status="delivered",
            ordered_at=now - 6 * day,
            promised_by=now - 2 * day,
            shipped_at=now - 4 * day,
            delivered_at=now - 2 * day,
        ),
        # Shipped, promised 4 days ago; the carrier expects it in 2 (delayed-order inquiry:
        # late beyond the grace, a goodwill credit).
        Order(
            id="O-5008",
            customer_id="C-1003",
            amount_cents=6_400,
            status="shipped",
            ordered_at=now - 9 * day,
            promised_by=now - 4 * day,
            shipped_at=now - 7 * day,
        ),
        # Shipped, promised in 3 days; the carrier expects it in 2 (on time).
        Order(
            id="O-5009",
            customer_id="C-1001",
            amount_cents=3_990,
            status="shipped",
            ordered_at=now - 2 * day,
            promised_by=now + 3 * day,
            shipped_at=now - 1 * day,
        ),
    ]


def seed_demo_data(engine: Engine, now: datetime | None = None) -> bool:
    """Insert the demo customers and orders unless customers exist; True when it seeded."""
    now = now or utcnow()
    with Session(engine) as session:
        if session.exec(select(Customer).limit(1)).first() is not None:
            return False
        for row in DEMO_CUSTOMERS:
            session.add(Customer.model_validate(row))
        session.flush()
        for order in _demo_orders(now):
            session.add(order)
        session.commit()
    return True
