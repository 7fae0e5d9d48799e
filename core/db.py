"""Systems of record: customers, orders, refunds, tickets, outbound messages and audit events.

SQLite under the data folder by default, PostgreSQL (psycopg 3) by URL. Business keys are unique
so a retried activity can never create a second refund, ticket, message or audit row: activities
insert with the key and, on a conflict, read back what the first attempt wrote.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Index,
    LargeBinary,
    Table,
    Text,
    UniqueConstraint,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Field, SQLModel, create_engine

__all__ = [
    "MICRO_USD_PER_USD",
    "AgentTranscript",
    "AuditChainHead",
    "AuditEvent",
    "CaseOutcome",
    "Credit",
    "Customer",
    "Document",
    "KpiSnapshot",
    "Message",
    "ModelCall",
    "Order",
    "PolicyVersion",
    "Refund",
    "Ticket",
    "add_missing_columns",
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
    """Append-only record of every decision and side effect of a case, hash-chained.

    `seq` numbers the events of the whole database 1, 2, 3 ... without gaps; `hash` =
    sha256(prev_hash || payload_sha256 || seq) links each event to the one before, so an
    edited, deleted or reordered row shows (`core.audit_chain`). The chain columns are null
    only on rows written before the chain existed.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("idempotency_key", name="uq_audit_idempotency_key"),
        Index("uq_audit_events_seq", "seq", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    case_id: str = Field(index=True, max_length=200)
    process: str = Field(index=True)
    action: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime
    recorded_at: datetime = Field(default_factory=utcnow)
    # When a model decided: which one, how sure, under which policy (content hash).
    policy_version: str | None = Field(default=None, max_length=64)
    model: str | None = Field(default=None, max_length=200)
    confidence: float | None = None
    seq: int | None = None
    payload_sha256: str | None = Field(default=None, max_length=64)
    prev_hash: str | None = Field(default=None, max_length=64)
    hash: str | None = Field(default=None, max_length=64)


class AuditChainHead(SQLModel, table=True):
    """The audit chain's last link, in one row (id 1). Appends lock it, so writers on every
    thread and worker take turns; verification compares it with the last event, so a deleted
    tail shows too."""

    __tablename__ = "audit_chain_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)


class Document(SQLModel, table=True):
    """An uploaded document (a receipt photo, an invoice scan), stored once per content.

    The bytes live in the database, not under the data folder: the API and the worker may run on
    different hosts (compose: separate containers, shared PostgreSQL only), one row is one
    transaction with its sha256 key, and a backup of the database is a backup of the documents.
    Uploads are at most 10 MB, which PostgreSQL's `bytea` and SQLite's BLOB hold comfortably.
    Workflows only ever see the id.
    """

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("sha256", name="uq_documents_sha256"),)

    id: str = Field(primary_key=True, max_length=64)
    sha256: str = Field(max_length=64)
    content_type: str = Field(max_length=100)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class PolicyVersion(SQLModel, table=True):
    """A policy file as cases were started under it, by its digest (the short sha256 of the
    file's bytes: a row never changes). A case carries the digest, not the document; the
    `evaluate_policy` activity reads the document here, so a file edited or removed later still
    decides the cases started under it."""

    __tablename__ = "policy_versions"

    digest: str = Field(primary_key=True, max_length=64)
    process: str = Field(max_length=64, description="The process whose case stored it first")
    version: str = Field(max_length=64, description="The file's human label")
    document: str = Field(sa_column=Column(Text, nullable=False), description="JSON")
    stored_at: datetime = Field(default_factory=utcnow)


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


CREATE_ATTEMPTS = 5


def create_tables(engine: Engine) -> None:
    """Create what is missing. Processes starting at once on one database (the cases' and the
    models' workers, the API) may race to create the same table: the loser looks again."""
    for attempt in range(CREATE_ATTEMPTS):
        try:
            SQLModel.metadata.create_all(engine)
            break
        except DBAPIError:
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    add_missing_columns(engine, SQLModel.metadata.tables[AuditEvent.__tablename__])


def add_missing_columns(engine: Engine, table: Table) -> None:
    """Add the nullable columns (and indexes) a table gained since this database was created,
    so an existing database keeps working: `create_all` never alters a table."""
    missing = _missing_columns(engine, table)
    if not missing:
        return
    quote = engine.dialect.identifier_preparer.quote
    try:
        with engine.begin() as conn:
            for column in missing:
                assert column.nullable, f"{table.name}.{column.name}: only nullable columns"
                kind = column.type.compile(dialect=engine.dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}"
                )
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    except DBAPIError:
        # The API and a worker starting at once: fine if the other one added them.
        if _missing_columns(engine, table):
            raise


def _missing_columns(engine: Engine, table: Table) -> list[Column[Any]]:
    present = {column["name"] for column in inspect(engine).get_columns(table.name)}
    return [column for column in table.columns if column.name not in present]


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


class Credit(SQLModel, table=True):
    """Goodwill credits on a customer's account (the agent's `issue_goodwill_credit` tool, once
    a person approved). The idempotency key is unique: a retried activity never credits twice."""

    __tablename__ = "credits"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_credits_idempotency_key"),)

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(max_length=200)
    case_id: str = Field(index=True, max_length=200)
    customer_id: str = Field(foreign_key="customers.id", index=True)
    order_id: str | None = Field(default=None, foreign_key="orders.id")
    amount_cents: int
    currency: str = Field(default="USD", max_length=3)
    reason: str
    approved_by: str | None = Field(default=None, max_length=128)
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def credit_id(self) -> str:
        return f"CR-{self.id}"


class CaseOutcome(SQLModel, table=True):
    """One row per case at its close (`core/outcomes.py`): the source of truth for the
    operations KPIs, kept as long as the database is (Temporal visibility may be retained for
    days only). Written once: the case id is the key, a retried write finds its row."""

    __tablename__ = "case_outcomes"

    case_id: str = Field(primary_key=True, max_length=200)
    run_id: str = Field(max_length=64)
    process: str = Field(index=True, max_length=64)
    channel: str | None = Field(default=None, index=True, max_length=32)
    outcome: str = Field(index=True, max_length=64)
    automated: bool = Field(index=True, description="No person was asked")
    people: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Who decided (the case's `decided_by`), when a person did",
    )
    sla_met: bool | None = Field(
        default=None, description="No approval SLA passed; None when no person was asked"
    )
    started_at: datetime
    closed_at: datetime = Field(index=True)
    resolution_s: float = Field(description="Start to close, seconds")
    model_cost_usd: float = 0.0
    policy_version: str | None = Field(default=None, max_length=128)


class KpiSnapshot(SQLModel, table=True):
    """The KPIs of one UTC day's closed cases (`core.report` over `case_outcomes`), taken by the
    daily `kpi_snapshot` operation. One row per day: the day is the key, so a second snapshot
    of the same day finds the first and writes nothing."""

    __tablename__ = "kpi_snapshots"

    day: str = Field(primary_key=True, max_length=10, description="YYYY-MM-DD, UTC")
    cases: int
    automated: int
    person_asked: int
    escalated: int
    sla_met: int
    containment_rate: float | None = None
    escalation_rate: float | None = None
    sla_attainment: float | None = None
    resolution_p50_s: float | None = None
    resolution_p95_s: float | None = None
    model_cost: float = 0.0
    cost_per_case: float | None = None
    by_process: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="The same KPIs per process",
    )
    baseline_version: str = Field(max_length=64, description="policies/roi.yaml's digest")
    taken_at: datetime = Field(default_factory=utcnow)


class AgentTranscript(SQLModel, table=True):
    """An agent conversation's messages, kept out of workflow history. Append-only: each write
    is one row holding the messages it added, numbered `step` 1, 2, ... within the transcript
    `id`. A reference (id, step) therefore pins one exact version, and a retried write finds
    the row its first attempt wrote. Model turns also keep their usage, so a retry answers with
    the first attempt's reply instead of asking (and paying) the model again."""

    __tablename__ = "agent_transcripts"

    id: str = Field(primary_key=True, max_length=64)
    step: int = Field(primary_key=True)
    workflow_id: str = Field(index=True, max_length=200)
    messages: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    model: str | None = Field(default=None, max_length=200, description="Upstream model id")
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro_usd: int = 0
    created_at: datetime = Field(default_factory=utcnow)
