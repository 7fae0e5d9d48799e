"""Decisions carry verifiable identity on every path: the forged-signal attack, refused.

The attack, as it was found: on a $1,299.00 (high risk, team lead then finance) refund case,
`temporal workflow signal --name approval_decision --input '{"request_id": "approval-1",
"approve": true, "approver": "mallory@evil.example", "approver_roles": ["team_lead"]}'`, then
the same as "eve" with `finance`, issued the refund. Here the same signals (and updates, and
tokens forged, expired or made for another decision) are refused and audited, and nothing is
refunded; the same decisions with the tokens the API mints go through, and the audit names the
token's subject. With encryption on, a valid token sent in clear is refused too.

The real refund workflow on the real Temporal dev server, with the real systems-of-record,
audit and decision-check activities (fakes only for the model activities).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.decisions import DecisionVerifier
from core.admission import AdmissionInterceptor
from core.codec import DECRYPTED_METADATA as CODEC_MARK
from core.codec import KeyRing
from core.db import AuditEvent, Refund
from core.decision_tokens import DecisionKey
from core.settings import Settings
from core.temporal import data_converter
from tests.conftest import TEST_ENCRYPTION_KEYS
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from workflows.contracts.approval import (
    DECRYPTED_METADATA,
    ApprovalDecisionInput,
    decision_digest,
)
from workflows.refund.types import CaseStatus, RefundCaseInput, RefundCaseResult, RefundCaseState

pytestmark = pytest.mark.timeout(120)

Handle = WorkflowHandle[Any, RefundCaseResult]
MALLORY = {
    "request_id": "approval-1",
    "approve": True,
    "approver": "mallory@evil.example",
    "approver_roles": ["team_lead"],
}
EVE = {**MALLORY, "approver": "eve@evil.example", "approver_roles": ["finance"]}


@pytest.fixture
def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    engine = seeded_engine(tmp_path)
    yield engine
    engine.dispose()


def _activities(engine: Engine, *, require_encrypted: bool = False) -> list[Any]:
    """The real activities; the decision check the production worker builds (one is already
    in `real_system_activities`, with the tests' key: replaced here when asked to)."""
    activities = [*real_system_activities(engine), fake_triage, fake_draft]
    if require_encrypted:
        verifier = DecisionVerifier(
            DecisionKey.from_settings(Settings(_env_file=None)),  # type: ignore[call-arg]
            require_encrypted=True,
        )
        activities = [a for a in activities if getattr(a, "__name__", "") != "verify_decision"]
        activities.append(verifier.verify_decision)
    return activities


async def _start(client: Client, task_queue: str, order: str = "O-5004") -> Handle:
    handle: Handle = await client.start_workflow(
        "refund",
        RefundCaseInput(
            channel="email", customer_id="C-1002", order_id=order, message=f"refund {order}"
        ),
        id=f"signed-{uuid.uuid4().hex}",
        task_queue=task_queue,
        result_type=RefundCaseResult,
    )
    for _ in range(200):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.status == CaseStatus.AWAITING_APPROVAL:
            return handle
        await asyncio.sleep(0.1)
    raise AssertionError(f"the case never asked for approval: {state.status}")


async def _state(handle: Handle) -> RefundCaseState:
    return await handle.query("get_state", result_type=RefundCaseState)


async def _audit_until(engine: Engine, case_id: str, action: str, count: int) -> list[AuditEvent]:
    """The case's audit events once `count` of `action` are in (audit writes are activities)."""
    for _ in range(200):
        with Session(engine) as session:
            rows = list(
                session.exec(
                    select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)  # type: ignore[arg-type]
                )
            )
        if sum(1 for row in rows if row.action == action) >= count:
            return rows
        await asyncio.sleep(0.1)
    return rows


def _refunds(engine: Engine, case_id: str) -> list[Refund]:
    with Session(engine) as session:
        return list(session.exec(select(Refund).where(Refund.case_id == case_id)))


def test_the_codec_and_the_contract_spell_the_mark_alike() -> None:
    assert CODEC_MARK == DECRYPTED_METADATA


async def test_forged_decisions_are_refused_audited_and_refund_nothing(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(dev_env.client, _activities(engine), executor)
        async with worker:
            handle = await _start(dev_env.client, worker.task_queue)
            try:
                # The attack: identity in the payload only, by signal (as the Temporal UI or
                # CLI sends it) and by update.
                await handle.signal("approval_decision", MALLORY)
                await handle.signal("approval_decision", EVE)
                # By update, the validator refuses it before it enters history.
                with pytest.raises(WorkflowUpdateFailedError) as by_update:
                    await handle.execute_update("decide", {**MALLORY, "decision_id": "u-1"})
                assert "no decision token" in str(by_update.value.cause)
                forged_update = {**MALLORY, "decision_id": "u-2", "credential": "a.b.c"}
                with pytest.raises(WorkflowUpdateFailedError) as by_update:
                    await handle.execute_update("decide", forged_update)
                assert "not valid" in str(by_update.value.cause)

                # Tokens that do not hold: another key, another case, a changed decision.
                forged_key = DecisionKey("not-the-deployment-key-" + "x" * 40)
                forged = ApprovalDecisionInput.model_validate(MALLORY)
                forged = forged.model_copy(
                    update={
                        "credential": forged_key.mint(
                            subject="mallory@evil.example",
                            roles=["team_lead"],
                            digest=decision_digest(handle.id, forged),
                        )
                    }
                )
                await handle.signal("approval_decision", forged)
                elsewhere = signed("another-case", ApprovalDecisionInput.model_validate(MALLORY))
                await handle.signal("approval_decision", elsewhere)
                lowered = signed(
                    handle.id,
                    ApprovalDecisionInput.model_validate(
                        {
                            **MALLORY,
                            "approve": None,
                            "action": "request_changes",
                            "new_amount_cents": 100_000,
                        }
                    ),
                ).model_copy(update={"new_amount_cents": 1})  # tampered after signing
                await handle.signal("approval_decision", lowered)

                rows = await _audit_until(engine, handle.id, "approval_signal_refused", 5)
                refused = [row for row in rows if row.action == "approval_signal_refused"]
                assert 5 == len(refused), [row.detail for row in refused]
                history = await handle.fetch_history()
                assert not [
                    e
                    for e in history.events
                    if e.HasField("workflow_execution_update_accepted_event_attributes")
                ], "a refused update entered history"
                assert {"unverified:mallory@evil.example", "unverified:eve@evil.example"} == {
                    row.actor for row in refused
                }
                reasons = " | ".join(str(row.detail["reason"]) for row in refused)
                for why in (
                    "no decision token",
                    "not valid",
                    "another case or another decision",
                ):
                    assert why in reasons
                state = await _state(handle)
                assert state.approval is not None
                assert (CaseStatus.AWAITING_APPROVAL, 1, []) == (
                    state.status,
                    state.approval.level,
                    state.approval.decisions,
                )
                assert [] == _refunds(engine, handle.id)
                assert not [row for row in rows if row.action == "approval_decided"]

                # The same people with the API's tokens: team lead, then finance, approve.
                lead = ApprovalDecisionInput(
                    request_id="approval-1",
                    decision_id="d-lead",
                    approve=True,
                    approver="lead@example.com",
                    approver_roles=["team_lead"],
                )
                await handle.execute_update("decide", signed(handle.id, lead))
                money = lead.model_copy(
                    update={
                        "decision_id": "d-fin",
                        "approver": "fin@example.com",
                        "approver_roles": ["finance"],
                    }
                )
                await handle.execute_update("decide", signed(handle.id, money))
                result = await handle.result()
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert ("approved", "fin@example.com") == (result.outcome.value, result.decided_by)
    assert 1 == len(_refunds(engine, handle.id))
    decided = [row for row in await _audit_until(engine, handle.id, "case_closed", 1)]
    assert ["lead@example.com", "fin@example.com"] == [
        row.actor for row in decided if row.action == "approval_decided"
    ]


async def test_with_encryption_on_a_valid_token_sent_in_clear_is_refused(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    ring = KeyRing.parse(TEST_ENCRYPTION_KEYS)
    service = dev_env.client.service_client
    namespace = dev_env.client.namespace
    encrypting = Client(
        service,
        namespace=namespace,
        data_converter=data_converter(ring),
        interceptors=[AdmissionInterceptor()],
    )
    marking = Client(
        service, namespace=namespace, data_converter=data_converter(ring, mark_decrypted=True)
    )
    in_clear = dev_env.client
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker: Worker = make_worker(marking, _activities(engine, require_encrypted=True), executor)
        async with worker:
            handle = await _start(encrypting, worker.task_queue, order="O-5003")
            try:
                decision = signed(
                    handle.id,
                    ApprovalDecisionInput(
                        request_id="approval-1",
                        decision_id="d-1",
                        approve=True,
                        approver="lead@example.com",
                        approver_roles=["team_lead"],
                    ),
                )
                plain_handle = in_clear.get_workflow_handle(handle.id)
                await plain_handle.signal("approval_decision", decision)
                rows = await _audit_until(engine, handle.id, "approval_signal_refused", 1)
                refusal = next(row for row in rows if row.action == "approval_signal_refused")
                assert "unencrypted" in str(refusal.detail["reason"])
                assert [] == _refunds(engine, handle.id)

                # The same token through an encrypting client is applied.
                await handle.execute_update("decide", decision)
                result = await handle.result()
            finally:
                with contextlib.suppress(Exception):
                    await handle.terminate("test finished")
    assert ("approved", "lead@example.com") == (result.outcome.value, result.decided_by)
    assert 1 == len(_refunds(engine, handle.id))
