"""The refund workflow with an attached receipt, on the time-skipping test server.

The receipt activities are the real ones: the committed fixture PNGs (`tests/fixtures/`) are
stored in the document store and read by the embedded OCR. The orders they name are seeded here
(the demo data does not have them). Triage is the deterministic fake (`"not sure"` in the text:
the model chain found no confident answer); the reply draft is a fake that reports a model cost
and the risk route it was asked for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.types import DraftReplyInput, DraftReplyResult
from core.db import AuditEvent, ModelCall, Refund, Ticket
from tests.fixtures.make_receipts import FIXTURES_DIR
from tests.helpers import (
    document_activities,
    fake_triage,
    make_worker,
    real_system_activities,
    seed_orders,
    seeded_engine,
    signed,
    store_document,
)
from workflows.contracts import search_attributes as sa
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
)

DRAFT_COST_USD = 0.0005
DRAFT_TOKENS = (300, 60)
CAFE = FIXTURES_DIR / "cafe_receipt_gbp.png"  # order O-7781, GBP 20.70, 3 Nov 2026
CONFIRMATION = FIXTURES_DIR / "order_confirmation_usd.png"  # order O-120934, $129.99


@activity.defn(name="draft_reply")
def priced_draft(input: DraftReplyInput) -> DraftReplyResult:
    risk = input.risk.value if input.risk else "none"
    return DraftReplyResult(
        text=f"[{input.template}/{risk}] Dear {input.customer_name}",
        model="fake:small",
        cost_usd=DRAFT_COST_USD,
        tokens_in=DRAFT_TOKENS[0],
        tokens_out=DRAFT_TOKENS[1],
        attempts=["small"],
    )


@pytest.fixture
async def engine(time_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path, now=await time_env.get_current_time())
    yield engine
    engine.dispose()


_STARTED: list[WorkflowHandle[object, RefundCaseResult]] = []


@pytest.fixture
async def worker(time_env: WorkflowEnvironment, engine: Engine) -> AsyncIterator[Worker]:
    with (
        ThreadPoolExecutor(max_workers=4) as executor,
        document_activities(engine) as documents,
    ):
        worker = make_worker(
            time_env.client,
            [*real_system_activities(engine), *documents, fake_triage, priced_draft],
            executor,
        )
        async with worker:
            yield worker
            # A case left running would stall time skipping for the next tests.
            for handle in _STARTED:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
            _STARTED.clear()


async def seed(env: WorkflowEnvironment, engine: Engine, **orders: tuple[str, int, str]) -> None:
    seed_orders(engine, await env.get_current_time(), orders)


async def start_case(
    env: WorkflowEnvironment,
    worker: Worker,
    *,
    text: str,
    attachment_id: str | None,
    customer: str = "C-1001",
    order: str | None = None,
) -> WorkflowHandle[object, RefundCaseResult]:
    handle = await env.client.start_workflow(
        "refund",
        RefundCaseInput(
            channel="email",
            customer_id=customer,
            order_id=order,
            message=text,
            attachment_id=attachment_id,
        ),
        id=f"refund-receipt-{uuid.uuid4().hex}",
        task_queue=worker.task_queue,
        result_type=RefundCaseResult,
    )
    _STARTED.append(handle)
    return handle


async def awaiting_approval(handle: WorkflowHandle[object, RefundCaseResult]) -> RefundCaseState:
    for _ in range(300):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.status == CaseStatus.AWAITING_APPROVAL:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"never awaited approval; last {state.status}")


def audit(engine: Engine, case_id: str) -> dict[str, dict[str, object]]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.case_id == case_id))
        return {row.action: row.detail for row in rows}


def refunded_cents(engine: Engine, case_id: str) -> list[int]:
    with Session(engine) as session:
        return [
            r.amount_cents for r in session.exec(select(Refund).where(Refund.case_id == case_id))
        ]


def ledger(engine: Engine, case_id: str) -> list[tuple[str, str, str, int]]:
    with Session(engine) as session:
        rows = session.exec(select(ModelCall).where(ModelCall.case_id == case_id))
        return [(row.task, row.provider, row.outcome, row.cost_micro_usd) for row in rows]


async def test_receipt_supplies_the_order_id_and_the_case_resolves_itself(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    await seed(time_env, engine, **{"O-7781": ("C-1001", 2_070, "GBP")})
    image = CAFE.read_bytes()
    document_id = store_document(engine, image)

    handle = await start_case(
        time_env,
        worker,
        text="Please refund my breakfast, the receipt is attached.",
        attachment_id=document_id,
    )
    result = await handle.result()

    assert RefundOutcome.AUTO_RESOLVED == result.outcome, result.reasons
    assert [2_070] == refunded_cents(engine, handle.id)
    state = await handle.query("get_state", result_type=RefundCaseState)
    assert "O-7781" == state.order_id
    assert state.receipt is not None
    assert ("O-7781", 2_070, "GBP") == (
        state.receipt.order_id,
        state.receipt.total_cents,
        state.receipt.currency,
    )
    assert "order id O-7781 read from the attached receipt" in state.notes
    read = audit(engine, handle.id)["receipt_read"]
    assert (document_id, "O-7781", 2_070) == (
        read["document_id"],
        read["order_id"],
        read["total_cents"],
    )
    # OCR is free and on the ledger; the case's spend is the draft's.
    assert [("ocr", "embedded", "ok", 0)] == ledger(engine, handle.id)
    assert DRAFT_COST_USD == result.model_cost_usd
    assert sum(DRAFT_TOKENS) == result.model_tokens
    assert result.reply is not None and result.reply.startswith("[refund_approved/low]")

    history = await handle.fetch_history()
    [read] = [
        event
        for event in history.events
        if event.activity_task_scheduled_event_attributes.activity_type.name == "read_document"
    ]
    assert b"Read the attached receipt" in read.user_metadata.summary.data
    # Only the id travelled: no payload holds the image, raw or base64.
    blob = b"".join(event.SerializeToString() for event in history.events)
    assert image[:64] not in blob
    assert base64.b64encode(image[:48]) not in blob
    assert document_id.encode() in blob


async def test_receipt_total_that_does_not_match_the_order_goes_to_a_person(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    # The receipt says $129.99; the order (within the automatic limit otherwise) is $99.99.
    await seed(time_env, engine, **{"O-120934": ("C-1001", 9_999, "USD")})
    handle = await start_case(
        time_env,
        worker,
        text="I returned it, please refund me. Confirmation attached.",
        attachment_id=store_document(engine, CONFIRMATION.read_bytes()),
    )

    state = await awaiting_approval(handle)

    assert state.assessment is not None and not state.assessment.automatic
    assert state.assessment.eligible
    reason = "the receipt total $129.99 does not match the order amount $99.99"
    assert [
        "delivered 2 days ago, within the 30-day return window",
        reason,
    ] == state.assessment.reasons
    assert state.approval is not None and reason in state.approval.reasons
    # The case's state moves before the ticket activity has run: poll the system of record.
    for _ in range(200):
        with Session(engine) as session:
            ticket = session.exec(select(Ticket).where(Ticket.case_id == handle.id)).one()
        if ticket.status == "awaiting_approval":
            break
        await asyncio.sleep(0.02)
    assert "awaiting_approval" == ticket.status
    assert reason in ticket.notes[-1]
    assert [] == refunded_cents(engine, handle.id)

    await handle.execute_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=state.approval.request_id,
                action="reject",
                approver="lead@acme.test",
                approver_roles=["team_lead"],
                reason="the receipt is for another amount",
            ),
        ),
    )
    result = await handle.result()
    assert RefundOutcome.REJECTED == result.outcome
    assert result.reply is not None and result.reply.startswith("[refund_rejected/medium]")


async def test_order_id_in_the_message_wins_over_the_receipt(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    # O-5001 (demo data: C-1001, $49.00) is in the text; the receipt is the café's O-7781.
    await seed(time_env, engine, **{"O-7781": ("C-1001", 2_070, "GBP")})
    handle = await start_case(
        time_env,
        worker,
        text="Refund O-5001 please, receipt attached.",
        attachment_id=store_document(engine, CAFE.read_bytes()),
    )

    state = await awaiting_approval(handle)

    assert "O-5001" == state.order_id
    assert state.assessment is not None
    assert "the receipt is for order O-7781, not O-5001" in state.assessment.reasons
    assert "the receipt total GBP 20.70 is in GBP, the order in USD" in state.assessment.reasons


async def test_a_receipt_that_cannot_be_read_is_noted_and_the_case_goes_on(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    broken = store_document(engine, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    handle = await start_case(
        time_env, worker, text="refund O-5001 please, it was late", attachment_id=broken
    )

    result = await handle.result()

    assert RefundOutcome.AUTO_RESOLVED == result.outcome
    state = await handle.query("get_state", result_type=RefundCaseState)
    assert state.receipt is None and broken == state.attachment_id
    [note] = [n for n in state.notes if n.startswith("the attached receipt could not be read")]
    assert "not a readable image" in note or "not an image" in note
    assert "receipt_unreadable" in audit(engine, handle.id)


async def test_needs_human_triage_goes_to_a_person_and_model_costs_add_up(
    time_env: WorkflowEnvironment, worker: Worker, engine: Engine
) -> None:
    handle = await start_case(
        time_env,
        worker,
        text="not sure what to do about O-5001, it is broken",
        attachment_id=None,
    )

    state = await awaiting_approval(handle)

    assert state.assessment is not None and not state.assessment.automatic
    assert "no model was sure enough of the intent (tried: small, premium, embedded)" in (
        state.assessment.reasons
    )
    assert 0.0021 == state.model_cost_usd
    assert 840 == state.model_tokens
    for _ in range(100):  # visibility is eventually consistent
        attributes = (await handle.describe()).typed_search_attributes
        if attributes.get(sa.MODEL_COST_USD) is not None:
            break
        await asyncio.sleep(0.05)
    assert 0.0021 == attributes.get(sa.MODEL_COST_USD)
    assert "triaged" in audit(engine, handle.id)
    assert audit(engine, handle.id)["triaged"]["needs_human"] is True

    assert state.approval is not None
    await handle.execute_update(
        "decide",
        signed(
            handle.id,
            ApprovalDecisionInput(
                request_id=state.approval.request_id,
                action="approve",
                approver="lead@acme.test",
                approver_roles=["team_lead"],
            ),
        ),
    )
    result = await handle.result()

    assert RefundOutcome.APPROVED == result.outcome
    assert pytest.approx(0.0021 + DRAFT_COST_USD) == result.model_cost_usd
    assert 840 + sum(DRAFT_TOKENS) == result.model_tokens
    attributes = (await handle.describe()).typed_search_attributes
    assert pytest.approx(0.0026) == attributes.get(sa.MODEL_COST_USD)
    assert result.reply is not None and result.reply.startswith("[refund_approved/medium]")
    closed = audit(engine, handle.id)["case_closed"]
    assert pytest.approx(0.0026) == closed["model_cost_usd"]
