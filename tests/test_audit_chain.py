"""The hash-chained audit trail: appends from many threads, retries, tampering, `podium audit`.

The chain tests run on SQLite and on a private PostgreSQL server (skipped when PostgreSQL is not
installed). Tampering happens the way an insider would do it: plain SQL on the table. The story
test runs a real refund case on the time-skipping server with the real audit activity.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from typer.testing import CliRunner

from activities.audit import AuditActivities
from activities.types import AuditEventInput, AuditEventResult
from core.audit_chain import (
    GENESIS_HASH,
    AuditRecord,
    append_event,
    link_hash,
    payload_sha256,
    policy_version_of,
    verify_chain,
)
from core.db import AuditChainHead, AuditEvent, create_tables, make_engine
from starter.cli import create_cli
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
)
from tests.postgres import scratch_database
from workflows.refund.types import RefundCaseInput, RefundCaseResult, RefundOutcome

THREADS = 8
EVENTS_PER_THREAD = 25
AT = datetime(2026, 11, 25, 9, 30, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """(URL, engine) of an empty Podium database of the test's own, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'podium.db'}"
        yield from _tables(url)
    else:
        server: str = request.getfixturevalue("postgres_url")
        with scratch_database(server) as url:
            yield from _tables(url)


def _tables(url: str) -> Iterator[tuple[str, Engine]]:
    engine = make_engine(url)
    try:
        create_tables(engine)
        yield url, engine
    finally:
        engine.dispose()


def event(key: str, case_id: str = "case-1", **overrides: Any) -> AuditEventInput:
    fields: dict[str, Any] = {
        "idempotency_key": key,
        "case_id": case_id,
        "process": "refund",
        "action": "approval_decided",
        "actor": "alice",
        "detail": {"decision": "approve", "amount_cents": 12_999, "reasons": ["under the limit"]},
        "occurred_at": AT,
        **overrides,
    }
    return AuditEventInput(**fields)


def record(engine: Engine, input: AuditEventInput) -> AuditEventResult:
    """Call the activity the way a worker would, with an activity context."""
    return ActivityEnvironment().run(AuditActivities(engine).record_audit_event, input)


def fill(engine: Engine, count: int, case_id: str = "case-1") -> None:
    for index in range(count):
        record(engine, event(f"{case_id}:audit:{index + 1}", case_id))


def audit(*args: str) -> Result:
    return CliRunner().invoke(create_cli(), ["audit", *args])


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql), params)


# --- hashing ------------------------------------------------------------------------------------


def test_hashes_are_canonical_and_linked() -> None:
    content: dict[str, Any] = {
        "case_id": "c",
        "process": "refund",
        "action": "triaged",
        "actor": "podium",
        "occurred_at": AT,
        "policy_version": None,
        "model": "fake:triage",
        "confidence": 0.93,
    }
    first = payload_sha256(detail={"a": 1, "b": [1.5, "é"]}, **content)
    # Key order and time zone of the same instant do not matter; the content does.
    same = payload_sha256(
        detail={"b": [1.5, "é"], "a": 1},
        **{**content, "occurred_at": AT.astimezone(datetime.now().astimezone().tzinfo)},
    )
    assert first == same
    assert first != payload_sha256(detail={"a": 2, "b": [1.5, "é"]}, **content)
    assert first != payload_sha256(detail={"a": 1, "b": [1.5, "é"]}, **{**content, "actor": "x"})
    expected = hashlib.sha256(f"{GENESIS_HASH}{first}1".encode()).hexdigest()
    assert expected == link_hash(GENESIS_HASH, first, 1)
    assert link_hash(GENESIS_HASH, first, 1) != link_hash(GENESIS_HASH, first, 2)


# --- appending ----------------------------------------------------------------------------------


def test_concurrent_appends_make_one_unbroken_chain(database: tuple[str, Engine]) -> None:
    _, engine = database

    def write(thread: int) -> list[AuditEventResult]:
        return [
            record(engine, event(f"case-{thread}:audit:{n}", f"case-{thread}"))
            for n in range(EVENTS_PER_THREAD)
        ]

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = [r for batch in pool.map(write, range(THREADS)) for r in batch]

    total = THREADS * EVENTS_PER_THREAD
    assert all(result.created for result in results)
    assert list(range(1, total + 1)) == sorted(result.seq or 0 for result in results)
    report = verify_chain(engine)
    assert report.ok, report.broken
    assert total == report.checked == report.head_seq
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()
    assert GENESIS_HASH == rows[0].prev_hash
    assert all(row.prev_hash == before.hash for before, row in pairwise(rows))
    assert rows[-1].hash == report.head_hash


def test_a_retry_returns_the_first_event_and_adds_no_link(database: tuple[str, Engine]) -> None:
    _, engine = database
    fill(engine, 3)
    first = record(engine, event("case-1:audit:4"))
    before = verify_chain(engine)

    retry = record(engine, event("case-1:audit:4"))

    assert (True, False) == (first.created, retry.created)
    assert (first.event_id, first.seq) == (retry.event_id, retry.seq)
    after = verify_chain(engine)
    assert after.ok
    assert (4, before.head_hash) == (after.head_seq, after.head_hash)
    assert 4 == after.checked


def test_model_confidence_and_policy_version_are_lifted_from_the_detail(
    database: tuple[str, Engine],
) -> None:
    _, engine = database
    policy = {"auto_refund_limit_cents": 10_000, "return_window_days": 30}
    record(
        engine,
        event("c:audit:1", action="triaged", detail={"model": "fake:triage", "confidence": 0.93}),
    )
    record(engine, event("c:audit:2", action="assessed", detail={"policy": policy}))
    record(engine, event("c:audit:3", action="refund_issued", detail={"refund_id": "R-1"}))
    record(engine, event("c:audit:4", action="x", model="explicit", confidence=1, detail={}))

    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq))).all()
    version = policy_version_of(policy)
    assert [
        ("fake:triage", 0.93, None),
        (None, None, version),
        (None, None, version),  # decisions after the assessment name its policy
        ("explicit", 1.0, version),
    ] == [(row.model, row.confidence, row.policy_version) for row in rows]
    assert verify_chain(engine).ok


# --- tampering ----------------------------------------------------------------------------------


def test_verify_passes_on_an_intact_chain(database: tuple[str, Engine]) -> None:
    url, engine = database
    fill(engine, 5)

    result = audit("verify", "--database-url", url)

    assert 0 == result.exit_code, result.output
    assert "intact: 5 events checked" in result.output
    as_json = audit("verify", "--json", "--database-url", url)
    assert 0 == as_json.exit_code
    report = json.loads(as_json.stdout)
    assert (True, 5, 5, None) == (
        report["ok"],
        report["checked"],
        report["head_seq"],
        report["broken"],
    )


def test_an_edited_detail_breaks_the_chain_at_that_event(database: tuple[str, Engine]) -> None:
    url, engine = database
    fill(engine, 6)
    execute(
        engine,
        "UPDATE audit_events SET detail = :detail WHERE seq = 4",
        detail=json.dumps({"decision": "approve", "amount_cents": 99_999, "reasons": []}),
    )

    result = audit("verify", "--database-url", url)

    assert 1 == result.exit_code, result.output
    assert "BROKEN at event #4 (edited)" in result.stderr
    assert "3 events before it are intact" in result.stderr
    report = verify_chain(engine)
    assert report.broken is not None
    assert (4, "edited", 3) == (report.broken.seq, report.broken.kind, report.checked)


def test_a_rewritten_hash_still_breaks_the_next_link(database: tuple[str, Engine]) -> None:
    """An insider who also recomputes the edited event's own hashes is caught by the next one."""
    _, engine = database
    fill(engine, 4)
    with Session(engine) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.seq == 2)).one()
        row.detail = {"decision": "reject"}
        row.payload_sha256 = payload_sha256(
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
        row.hash = link_hash(row.prev_hash or "", row.payload_sha256, 2)
        session.add(row)
        session.commit()

    broken = verify_chain(engine).broken

    assert broken is not None
    assert (3, "deleted") == (broken.seq, broken.kind)  # #3 no longer links to #2


def test_a_deleted_event_breaks_the_chain(database: tuple[str, Engine]) -> None:
    url, engine = database
    fill(engine, 6)
    execute(engine, "DELETE FROM audit_events WHERE seq = 3")

    result = audit("verify", "--database-url", url)

    assert 1 == result.exit_code, result.output
    assert "BROKEN at event #3 (deleted)" in result.stderr
    assert "#4 follows #2" in result.stderr


def test_deleting_the_newest_events_shows_against_the_head(database: tuple[str, Engine]) -> None:
    url, engine = database
    fill(engine, 6)
    execute(engine, "DELETE FROM audit_events WHERE seq >= 5")

    result = audit("verify", "--database-url", url)

    assert 1 == result.exit_code, result.output
    assert "BROKEN at event #5 (deleted)" in result.stderr
    assert "the chain head records #6" in result.stderr


def test_reordered_events_break_the_chain(database: tuple[str, Engine]) -> None:
    _, engine = database
    fill(engine, 5)
    # Swap #2 and #3 (through a free number: seq is unique).
    execute(engine, "UPDATE audit_events SET seq = -1 WHERE seq = 2")
    execute(engine, "UPDATE audit_events SET seq = 2 WHERE seq = 3")
    execute(engine, "UPDATE audit_events SET seq = 3 WHERE seq = -1")

    broken = verify_chain(engine).broken

    assert broken is not None
    assert (2, "reordered") == (broken.seq, broken.kind)
    assert "links to the event now #3" in broken.reason


def test_an_event_written_around_the_chain_is_reported(database: tuple[str, Engine]) -> None:
    _, engine = database
    fill(engine, 2)
    execute(
        engine,
        "INSERT INTO audit_events (idempotency_key, case_id, process, action, actor, detail, "
        "occurred_at, recorded_at) VALUES ('forged', 'case-1', 'refund', 'refund_issued', "
        "'mallory', '{}', :at, :at)",
        at=AT,
    )

    broken = verify_chain(engine).broken

    assert broken is not None
    assert ("unlinked", None) == (broken.kind, broken.seq)


def test_an_existing_database_gets_the_chain_columns(tmp_path: Path) -> None:
    """A database created before the chain: `create_tables` adds the columns and the index; the
    old rows are reported, not silently trusted."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    try:
        execute(
            engine,
            "CREATE TABLE audit_events (id INTEGER PRIMARY KEY, idempotency_key VARCHAR(200) NOT "
            "NULL UNIQUE, case_id VARCHAR(200) NOT NULL, process VARCHAR NOT NULL, action VARCHAR"
            " NOT NULL, actor VARCHAR NOT NULL, detail JSON NOT NULL, occurred_at DATETIME NOT "
            "NULL, recorded_at DATETIME NOT NULL)",
        )
        execute(
            engine,
            "INSERT INTO audit_events (idempotency_key, case_id, process, action, actor, detail,"
            " occurred_at, recorded_at) VALUES ('old', 'c', 'refund', 'triaged', 'podium', '{}',"
            " :at, :at)",
            at=AT,
        )

        create_tables(engine)
        create_tables(engine)  # idempotent
        fill(engine, 2)

        with Session(engine) as session:
            seqs = session.exec(select(AuditEvent.seq).order_by(col(AuditEvent.id))).all()
            head = session.get(AuditChainHead, 1)
        assert [None, 1, 2] == list(seqs)
        assert head is not None and 2 == head.seq
        report = verify_chain(engine)
        assert report.broken is not None
        assert (2, "unlinked", 1) == (report.checked, report.broken.kind, report.broken.event_id)
    finally:
        engine.dispose()


def test_verify_on_a_missing_database_fails_without_creating_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.db"

    result = audit("verify", "--database-url", f"sqlite:///{path}")

    assert 2 == result.exit_code
    assert "no database at" in result.stderr
    assert not path.exists()


def test_audit_help_says_it_reads_the_database() -> None:
    result = audit("--help")
    assert 0 == result.exit_code
    assert "Reads the database directly" in " ".join(result.output.split())


# --- the story of a real case -------------------------------------------------------------------


async def test_show_tells_the_story_of_a_refund_case(
    time_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    case_id = f"refund-audit-{uuid.uuid4().hex}"
    try:
        with ThreadPoolExecutor(max_workers=4) as executor:
            worker = make_worker(
                time_env.client,
                [*real_system_activities(engine), fake_triage, fake_draft],
                executor,
            )
            async with worker:
                result = await time_env.client.execute_workflow(
                    "refund",
                    RefundCaseInput(
                        channel="email",
                        customer_id="C-1001",
                        order_id="O-5001",
                        message="Please refund order O-5001",
                    ),
                    id=case_id,
                    task_queue=worker.task_queue,
                    result_type=RefundCaseResult,
                    execution_timeout=timedelta(minutes=1),
                )
        assert RefundOutcome.AUTO_RESOLVED == result.outcome

        shown = audit("show", case_id, "--database-url", url)
        as_json = audit("show", case_id, "--json", "--database-url", url)
        verified = audit("verify", "--database-url", url)
    finally:
        engine.dispose()

    assert 0 == shown.exit_code, shown.output
    lines = shown.stdout.splitlines()
    actions = [line.split()[4] for line in lines[3:]]  # after the title, policy and headers
    assert ["triaged", "assessed", "refund_issued", "case_closed"] == actions
    triaged = next(line for line in lines if " triaged " in line)
    assert "intent refund_request" in triaged
    assert "confidence 0.93" in triaged and "model fake:triage" in triaged
    assessed = next(line for line in lines if " assessed " in line)
    assert "recommendation approve" in assessed and "automatic yes" in assessed
    assert f"refund_id {result.refund_id}" in next(
        line for line in lines if "refund_issued" in line
    )
    closed = next(line for line in lines if "case_closed" in line)
    assert "policy" == closed.split()[3] and "outcome auto_resolved" in closed
    assert lines[1].startswith("Policy: sha256:")

    assert 0 == as_json.exit_code
    story = json.loads(as_json.stdout)
    triaged_event = story["events"][0]
    assert ("triaged", "fake:triage", 0.93) == (
        triaged_event["action"],
        triaged_event["model"],
        triaged_event["confidence"],
    )
    assert [event["seq"] for event in story["events"]] == sorted(
        event["seq"] for event in story["events"]
    )
    assert all(event["policy_version"] for event in story["events"][1:])

    assert 0 == verified.exit_code, verified.output
    assert f"intact: {len(story['events'])} events checked" in verified.stdout


def test_show_of_an_unknown_case_fails(database: tuple[str, Engine]) -> None:
    url, engine = database
    fill(engine, 1)

    result = audit("show", "no-such-case", "--database-url", url)

    assert 1 == result.exit_code
    assert "no audit events for case no-such-case" in result.stderr


def test_append_event_normalises_what_it_stores(database: tuple[str, Engine]) -> None:
    """What is stored is exactly what was hashed: JSON-native values, UTC times, float scores."""
    _, engine = database
    local = AT.astimezone(datetime.now().astimezone().tzinfo)
    append_event(
        engine,
        AuditRecord(
            idempotency_key="k",
            case_id="c",
            process="refund",
            action="triaged",
            actor="podium",
            detail={"when": AT, "pair": (1, 2)},
            occurred_at=local,
            confidence=1,
        ),
    )
    assert verify_chain(engine).ok
