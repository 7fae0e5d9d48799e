"""The tamper-evident audit trail: append an event, verify the chain, tell a case's story.

Every audit event gets a global, gap-free sequence number `seq` and two hashes:

    payload_sha256 = sha256(canonical JSON of case_id, process, action, actor, detail,
                            occurred_at, policy_version, model, confidence)
    hash           = sha256(prev_hash || payload_sha256 || seq)

where `prev_hash` is the previous event's `hash` (64 zeros before the first event). Editing an
event breaks its payload hash; deleting, inserting or renumbering one breaks the links; deleting
the newest ones shows against the chain head (`audit_chain_head`), which every append moves.

Appends take turns: on PostgreSQL each one locks the chain head row (`SELECT ... FOR UPDATE`),
which serializes writers on every thread of every worker; on SQLite each one opens its
transaction with `BEGIN IMMEDIATE`, which takes the database's single write lock up front (a
plain `BEGIN` would let two writers read the same head and then collide). In its turn, an append
whose idempotency key is already recorded returns that event: a retried activity adds no link.

Personal data in `detail` (an approver's comment naming a customer's email or phone, a card
number) is masked before it is hashed and stored (`core.redaction`): the trail proves who decided
what and why without becoming a copy of the customer's data, and the chain verifies as written.
`actor` stays as given: who acted is what an audit trail is for.

What the chain cannot show on its own: someone with write access who rewrites every event from
the edit onwards and the head as well. Keeping the head hash elsewhere (`podium audit verify
--json` prints it) anchors the chain against that too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from core.db import AuditChainHead, AuditEvent, utcnow
from core.redaction import redact

__all__ = [
    "GENESIS_HASH",
    "AppendResult",
    "AuditRecord",
    "ChainBreak",
    "ChainReport",
    "StoryEvent",
    "append_event",
    "canonical_json",
    "case_story",
    "link_hash",
    "payload_sha256",
    "policy_version_of",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
HEAD_ID = 1
_WALK_BATCH = 1_000


# --- hashing (pure) -----------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 as is, no NaN."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=str,
    )


def _utc(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything Podium stores is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def payload_sha256(
    *,
    case_id: str,
    process: str,
    action: str,
    actor: str,
    detail: Mapping[str, Any],
    occurred_at: datetime,
    policy_version: str | None,
    model: str | None,
    confidence: float | None,
) -> str:
    """The hash of an event's content (everything but its bookkeeping: ids, keys, links)."""
    payload = {
        "case_id": case_id,
        "process": process,
        "action": action,
        "actor": actor,
        "detail": detail,
        "occurred_at": _utc(occurred_at).isoformat(timespec="microseconds"),
        "policy_version": policy_version,
        "model": model,
        "confidence": confidence,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def link_hash(prev_hash: str, payload_hash: str, seq: int) -> str:
    """sha256(prev_hash || payload_sha256 || seq); both hashes are 64 hex characters, so the
    concatenation is unambiguous."""
    return hashlib.sha256(f"{prev_hash}{payload_hash}{seq:d}".encode()).hexdigest()


def policy_version_of(policy: Mapping[str, Any]) -> str:
    """A policy's version: the hash of its content, so the same rules always get the same name."""
    return "sha256:" + hashlib.sha256(canonical_json(policy).encode()).hexdigest()[:16]


def _row_payload_sha256(row: AuditEvent) -> str:
    return payload_sha256(
        case_id=row.case_id,
        process=row.process,
        action=row.action,
        actor=row.actor,
        detail=row.detail,
        occurred_at=row.occurred_at,
        policy_version=row.policy_version,
        model=row.model,
        confidence=row.confidence,
    )


# --- append -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRecord:
    """What an append records; the chain fields are computed."""

    idempotency_key: str
    case_id: str
    process: str
    action: str
    actor: str
    detail: Mapping[str, Any]
    occurred_at: datetime
    policy_version: str | None = None
    model: str | None = None
    confidence: float | None = None


@dataclass(frozen=True)
class AppendResult:
    event_id: int
    seq: int | None  # None only for an event recorded before the chain existed
    created: bool


def append_event(engine: Engine, record: AuditRecord) -> AppendResult:
    """Append one event to the chain, or return the event its idempotency key already has.

    An event without a policy version takes its case's latest one: every decision after the
    assessment names the policy it was made under."""
    # Stored exactly as hashed: personal data masked first, then JSON-native values, UTC.
    detail: dict[str, Any] = json.loads(canonical_json(redact(dict(record.detail))))
    occurred_at = _utc(record.occurred_at)
    confidence = float(record.confidence) if record.confidence is not None else None
    with Session(engine) as session:
        head = _lock_head(session)
        existing = _by_key(session, record.idempotency_key)
        if existing is not None:
            session.rollback()  # end the turn
            return existing
        policy_version = record.policy_version or _case_policy_version(session, record.case_id)
        payload = payload_sha256(
            case_id=record.case_id,
            process=record.process,
            action=record.action,
            actor=record.actor,
            detail=detail,
            occurred_at=occurred_at,
            policy_version=policy_version,
            model=record.model,
            confidence=confidence,
        )
        seq = head.seq + 1
        digest = link_hash(head.hash, payload, seq)
        event = AuditEvent(
            idempotency_key=record.idempotency_key,
            case_id=record.case_id,
            process=record.process,
            action=record.action,
            actor=record.actor,
            detail=detail,
            occurred_at=occurred_at,
            policy_version=policy_version,
            model=record.model,
            confidence=confidence,
            seq=seq,
            payload_sha256=payload,
            prev_hash=head.hash,
            hash=digest,
        )
        head.seq, head.hash, head.updated_at = seq, digest, utcnow()
        session.add(event)
        session.add(head)
        try:
            session.flush()
            event_id = event.id
            session.commit()
        except IntegrityError:
            # Only a writer that bypassed the chain can get here first; its row stands.
            session.rollback()
            found = _by_key(session, record.idempotency_key)
            if found is None:
                raise
            return found
    assert event_id is not None
    return AppendResult(event_id=event_id, seq=seq, created=True)


def _lock_head(session: Session) -> AuditChainHead:
    """Start this append's turn and return the chain head, locked until commit or rollback."""
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        # The first statement of the transaction: pysqlite then issues no BEGIN of its own.
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    query = select(AuditChainHead).where(AuditChainHead.id == HEAD_ID).with_for_update()
    head = session.exec(query).first()
    if head is None:
        values = {"id": HEAD_ID, "seq": 0, "hash": GENESIS_HASH, "updated_at": utcnow()}
        if dialect == "postgresql":
            # Two first appends at once: the second waits for the first's row, then locks it.
            session.execute(
                postgresql.insert(AuditChainHead).values(values).on_conflict_do_nothing()
            )
        elif dialect == "sqlite":
            session.execute(sqlite.insert(AuditChainHead).values(values).on_conflict_do_nothing())
        else:
            session.execute(insert(AuditChainHead).values(values))
        head = session.exec(query).one()
    return head


def _by_key(session: Session, key: str) -> AppendResult | None:
    row = session.exec(select(AuditEvent).where(AuditEvent.idempotency_key == key)).first()
    if row is None or row.id is None:
        return None
    return AppendResult(event_id=row.id, seq=row.seq, created=False)


def _case_policy_version(session: Session, case_id: str) -> str | None:
    query = (
        select(AuditEvent.policy_version)
        .where(AuditEvent.case_id == case_id, col(AuditEvent.policy_version).is_not(None))
        .order_by(col(AuditEvent.seq).desc())
        .limit(1)
    )
    return session.exec(query).first()


# --- verify -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainBreak:
    """The first place the chain does not hold.

    `kind`: `edited` (an event's content or link no longer matches its hashes), `deleted` (an
    event is missing: a gap in seq, a link to nowhere, or a head past the last event),
    `reordered` (an event links to another than the one before it), `head` (the chain head does
    not match the last event), `unlinked` (an event without chain fields: written before the
    chain existed or around it)."""

    seq: int | None
    kind: str
    reason: str
    event_id: int | None = None


@dataclass(frozen=True)
class ChainReport:
    checked: int  # events verified intact, in seq order, before any break
    head_seq: int
    head_hash: str
    broken: ChainBreak | None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "broken": asdict(self.broken) if self.broken is not None else None,
        }


def verify_chain(engine: Engine) -> ChainReport:
    """Walk every event in seq order, recompute its hashes and links; stop at the first break."""
    with Session(engine) as session:
        head = session.get(AuditChainHead, HEAD_ID)
        head_seq = head.seq if head is not None else 0
        head_hash = head.hash if head is not None else GENESIS_HASH

        def report(checked: int, broken: ChainBreak | None) -> ChainReport:
            return ChainReport(checked, head_seq, head_hash, broken)

        expected, prev = 1, GENESIS_HASH
        rows = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.seq).is_not(None))
            .order_by(col(AuditEvent.seq))
            .execution_options(yield_per=_WALK_BATCH)
        )
        for row in rows:
            broken = _check(session, row, expected, prev)
            if broken is not None:
                return report(expected - 1, broken)
            assert row.hash is not None
            expected, prev = expected + 1, row.hash
        last = expected - 1

        if head is None and last > 0:
            return report(last, ChainBreak(None, "head", "the chain head is missing"))
        if head_seq > last:
            missing = f"#{last + 1}" if head_seq == last + 1 else f"#{last + 1}-#{head_seq}"
            why = f"event {missing} is missing: the chain head records #{head_seq}, the last "
            why += f"event is #{last}" if last else "there are no events"
            return report(last, ChainBreak(last + 1, "deleted", why))
        if head_seq != last or head_hash != prev:
            why = f"the chain head (#{head_seq}) does not match the last event (#{last})"
            return report(last, ChainBreak(last or None, "head", why))

        unlinked = session.exec(
            select(AuditEvent.id).where(col(AuditEvent.seq).is_(None)).order_by(col(AuditEvent.id))
        ).first()
        if unlinked is not None:
            why = f"event id {unlinked} has no chain link (recorded before the chain or around it)"
            return report(last, ChainBreak(None, "unlinked", why, unlinked))
        return report(last, None)


def _check(session: Session, row: AuditEvent, expected: int, prev: str) -> ChainBreak | None:
    """Why `row`, expected to be event #expected after one whose hash is `prev`, breaks."""
    seq = row.seq
    assert seq is not None
    if seq > expected and row.prev_hash != prev:
        missing = f"#{expected}" if seq == expected + 1 else f"#{expected}-#{seq - 1}"
        after = f"follows #{expected - 1}" if expected > 1 else "is the first event"
        why = f"event {missing} is missing: #{seq} {after}"
        return ChainBreak(expected, "deleted", why)
    if _row_payload_sha256(row) != row.payload_sha256:
        why = f"event #{seq} ({row.action}, case {row.case_id}) differs from what was recorded"
        return ChainBreak(seq, "edited", why, row.id)
    if row.prev_hash != prev:
        origin = _seq_with_hash(session, row.prev_hash)
        if row.prev_hash == GENESIS_HASH or (origin is not None and origin != expected - 1):
            was = "the start of the chain" if origin is None else f"the event now #{origin}"
            why = f"event #{seq} is out of place: it links to {was}, not to #{expected - 1}"
            return ChainBreak(seq, "reordered", why, row.id)
        why = f"event #{seq} does not link to #{expected - 1}: an event was deleted or replaced"
        return ChainBreak(seq, "deleted", why, row.id)
    if seq != expected or row.hash != link_hash(prev, row.payload_sha256, seq):
        why = f"event #{seq} ({row.action}, case {row.case_id}): its link hash does not match"
        return ChainBreak(seq, "edited", why, row.id)
    return None


def _seq_with_hash(session: Session, digest: str | None) -> int | None:
    # Only on a break: no index on `hash`, one scan is fine.
    if digest is None:
        return None
    return session.exec(select(AuditEvent.seq).where(AuditEvent.hash == digest)).first()


# --- the story of a case ------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryEvent:
    """One audit event of a case, as it was recorded."""

    seq: int | None
    event_id: int
    occurred_at: datetime
    actor: str
    action: str
    detail: dict[str, Any]
    model: str | None
    confidence: float | None
    policy_version: str | None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat()
        return data


def case_story(engine: Engine, case_id: str) -> list[StoryEvent]:
    """The audit events of one case, in the order they were recorded."""
    with Session(engine) as session:
        rows = session.exec(
            select(AuditEvent)
            .where(AuditEvent.case_id == case_id)
            .order_by(col(AuditEvent.seq), col(AuditEvent.id))
        ).all()
        return [
            StoryEvent(
                seq=row.seq,
                event_id=row.id or 0,
                occurred_at=_utc(row.occurred_at),
                actor=row.actor,
                action=row.action,
                detail=dict(row.detail),
                model=row.model,
                confidence=row.confidence,
                policy_version=row.policy_version,
            )
            for row in rows
        ]
