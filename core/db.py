"""Systems of record: customers, orders, refunds, tickets, outbound messages and audit events.

SQLite under the data folder by default, PostgreSQL (psycopg 3) by URL. Business keys are unique
so a retried activity can never create a second refund, ticket, message or audit row: activities
insert with the key and, on a conflict, read back what the first attempt wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, create_engine

__all__ = [
    "MICRO_USD_PER_USD",
    "AuditEvent",
    "Customer",
    "Message",
    "ModelCall",
    "Order",
    "Refund",
    "Ticket",
    "create_tables",
    "make_engine",
    "utcnow",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=64)
    name: str
    email: str
    tier: str = Field(default="standard", index=True)
    standing: str = Field(default="good")
    created_at: datetime = Field(default_factory=utcnow)


class Order(SQLModel, table=True):
    __tablename__ = "orders"

    id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(foreign_key="customers.id", index=True)
    amount_cents: int
    currency: str = Field(default="USD", max_length=3)
    status: str = Field(index=True)
    ordered_at: datetime
    promised_by: datetime
    shipped_at: datetime | None = None
    delivered_at: datetime | None = None


class Refund(SQLModel, table=True):
    """One row per refund. Both the idempotency key and the order are unique: a retried
    activity and a second case for the same order alike can never refund twice."""

    __tablename__ = "refunds"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_refunds_idempotency_key"),
        UniqueConstraint("order_id", name="uq_refunds_order_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    case_id: str = Field(index=True, max_length=200)
    order_id: str = Field(foreign_key="orders.id")
    customer_id: str = Field(foreign_key="customers.id")
    amount_cents: int
    currency: str = Field(default="USD", max_length=3)
    reason: str
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def refund_id(self) -> str:
        return f"R-{self.id}"


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (UniqueConstraint("case_id", name="uq_tickets_case_id"),)

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=200)
    customer_id: str = Field(index=True)
    order_id: str | None = None
    subject: str
    channel: str
    status: str = Field(default="open", index=True)
    escalated: bool = False
    notes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def ticket_id(self) -> str:
        return f"T-{self.id}"


class Message(SQLModel, table=True):
    """Outbound messages (customer replies, escalation notices): the outbox."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_messages_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    case_id: str = Field(index=True, max_length=200)
    kind: str  # "customer_reply" | "escalation"
    channel: str
    recipient: str
    body: str
    created_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only record of every decision and side effect of a case."""

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_audit_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    case_id: str = Field(index=True, max_length=200)
    process: str = Field(index=True)
    action: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime
    recorded_at: datetime = Field(default_factory=utcnow)


def make_engine(url: str) -> Engine:
    """Build the engine; for SQLite, create the folder and use WAL so readers never block."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def create_tables(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)


MICRO_USD_PER_USD = 1_000_000


class ModelCall(SQLModel, table=True):
    """The model cost ledger: one row per attempt the model gateway makes (a fallback chain
    writes one row per model it tried). Money is integer micro-dollars (1 USD = 1,000,000), so
    sums are exact; `cost_usd` converts."""

    __tablename__ = "model_calls"

    id: int | None = Field(default=None, primary_key=True)
    task: str = Field(index=True, max_length=32)
    provider: str = Field(max_length=100, description="Model name in the models file")
    model: str = Field(index=True, max_length=200, description="Upstream model id")
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    cost_micro_usd: int = 0
    # ok | fallback | failed | low_confidence | breaker_open | invalid_output
    outcome: str = Field(index=True, max_length=32)
    error: str | None = Field(default=None, max_length=500)
    workflow_id: str | None = Field(default=None, max_length=200)
    case_id: str | None = Field(default=None, index=True, max_length=200)
    created_at: datetime = Field(default_factory=utcnow, index=True)

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micro_usd) / MICRO_USD_PER_USD
