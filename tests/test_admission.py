"""Decision updates are admitted only while the case is quiet, and every history replays.

An update accepted in the same workflow task as an activity result replays in another order
than it ran (the SDK delivers the two in separate activations live, in one when replaying), and
the case can no longer be replayed. The gate's validator (`ApprovalGate.admit`) rejects such an
update as `CaseBusy` before history; `core.admission.AdmissionInterceptor`, installed on every
Podium client, sends it again. Shown here on the real dev server with the real refund workflow,
systems-of-record, audit and decision-check activities (fakes only for the models): an update
sent while a decision signal is being checked is deferred and nothing of it enters history;
racing decisions on several cases each apply once, and each case's history replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.decisions import DecisionVerifier
from core.admission import AdmissionInterceptor
from core.db import AuditEvent, Refund
from core.decision_tokens import DecisionKey
from core.settings import Settings
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seed_orders,
    seeded_engine,
    signed,
)
from worker import workflow_runner
from workflows.contracts.approval import (
    CASE_BUSY,
    ApprovalDecisionInput,
    ApprovalDecisionResult,
    ApprovalLevel,
    ApprovalPolicy,
    VerifyDecisionInput,
    VerifyDecisionResult,
)
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)
from workflows.registry import PROCESSES

pytestmark = pytest.mark.timeout(300)

Handle = WorkflowHandle[Any, RefundCaseResult]
LEAD = ["team_lead"]
PANEL = ApprovalPolicy(levels=[ApprovalLevel(name="panel", approver_roles=LEAD, quorum=2)])
QUORUM = RefundPolicy(approvals={RiskLevel.MEDIUM: PANEL, RiskLevel.HIGH: PANEL})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = seeded_engine(tmp_path)
    yield engine
    engine.dispose()


def _decision(case_id: str, decision_id: str, approver: str, roles: list[str]) -> Any:
    return signed(
        case_id,
        ApprovalDecisionInput(
            request_id="approval-1",
            decision_id=decision_id,
            action="approve",
            approver=approver,
            approver_roles=roles,
        ),
    )


async def _start(client: Client, task_queue: str, order: str, policy: RefundPolicy) -> Handle:
    handle: Handle = await client.start_workflow(
        "refund",
        RefundCaseInput(
            channel="email",
            customer_id="C-1002",
            order_id=order,
            message=f"refund {order}",
            policy=policy,
        ),
        id=f"admission-{uuid.uuid4().hex}",
        task_queue=task_queue,
        result_type=RefundCaseResult,
    )
    for _ in range(600):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.status == CaseStatus.AWAITING_APPROVAL:
            return handle
        await asyncio.sleep(0.1)
    raise AssertionError(f"the case never asked for approval: {state.status}")


def _actions(engine: Engine, case_id: str) -> list[str]:
    with Session(engine) as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.case_id == case_id))
        return [row.action for row in rows]


def _refunds(engine: Engine, case_id: str) -> int:
    with Session(engine) as session:
        return len(list(session.exec(select(Refund).where(Refund.case_id == case_id))))


async def _replays(handle: Handle) -> None:
    await Replayer(
        workflows=PROCESSES.workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    ).replay_workflow(await handle.fetch_history())


async def test_an_update_sent_while_a_signal_is_checked_is_deferred_then_admitted(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    released = asyncio.Event()
    verifier = DecisionVerifier(DecisionKey.from_settings(Settings(_env_file=None)))  # type: ignore[call-arg]

    @activity.defn(name="verify_decision")
    async def held_verify(input: VerifyDecisionInput) -> VerifyDecisionResult:
        """The real check, held until the test lets it answer: the case stays busy."""
        await released.wait()
        return verifier.verify_decision(input)

    activities = [
        *(a for a in real_system_activities(engine) if a.__name__ != "verify_decision"),
        held_verify,
        fake_triage,
        fake_draft,
    ]
    # A client that does not send deferred updates again, to see the rejection itself.
    plain = Client(**{**dev_env.client.config(), "interceptors": []})
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(dev_env.client, activities, executor)
        async with worker:
            handle = await _start(dev_env.client, worker.task_queue, "O-5003", QUORUM)
            await handle.signal("approval_decision", _decision(handle.id, "d-lead", "lead", LEAD))
            for _ in range(600):  # the signal's token check is running
                described = await handle.describe()
                pending = described.raw_description.pending_activities
                if any(p.activity_type.name == "verify_decision" for p in pending):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the signal's decision check never started")
            second = _decision(handle.id, "d-lead2", "lead2", LEAD)
            with pytest.raises(WorkflowUpdateFailedError) as caught:
                await plain.get_workflow_handle(handle.id).execute_update("decide", second)
            assert isinstance(caught.value.cause, ApplicationError)
            assert CASE_BUSY == caught.value.cause.type
            history = await handle.fetch_history()
            assert not any(
                e.HasField("workflow_execution_update_accepted_event_attributes")
                for e in history.events
            )
            # Through a Podium client: sent again until the case is quiet, then applied.
            admitted = asyncio.create_task(
                handle.execute_update("decide", second, result_type=ApprovalDecisionResult)
            )
            await asyncio.sleep(0.5)
            assert not admitted.done()
            released.set()
            result = await admitted
            outcome = await handle.result()
    assert "d-lead2" == result.decision_id
    assert RefundOutcome.APPROVED == outcome.outcome
    assert 1 == _refunds(engine, handle.id)
    assert 2 == _actions(engine, handle.id).count("approval_decided")
    await _replays(handle)


async def test_racing_decisions_apply_once_and_every_history_replays(
    dev_env: WorkflowEnvironment, engine: Engine
) -> None:
    """Eight cases (team lead, then finance), each sent at once: the team lead's decision six
    times (one decision id, six updates), another lead's twice and finance's twice (refused
    while level 1 decides, or taken at level 2)."""
    assert any(isinstance(i, AdmissionInterceptor) for i in dev_env.client.config()["interceptors"])
    activities = [*real_system_activities(engine), fake_triage, fake_draft]
    orders = {f"O-81{n:02d}": ("C-1002", 129_900, "USD") for n in range(8)}  # high risk each
    seed_orders(engine, await dev_env.get_current_time(), orders)
    with ThreadPoolExecutor(max_workers=8) as executor:
        worker = make_worker(dev_env.client, activities, executor)
        async with worker:
            handles = await asyncio.gather(
                *(
                    _start(dev_env.client, worker.task_queue, order, RefundPolicy())
                    for order in orders
                )
            )

            async def attempt(handle: Handle, decision: Any) -> None:
                # Refused, or sent again (busy) until the case had closed: either is an answer.
                with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
                    await handle.execute_update("decide", decision)

            async def race(handle: Handle) -> RefundCaseResult:
                lead = _decision(handle.id, "d-lead", "lead", LEAD)
                other = _decision(handle.id, "d-lead2", "lead2", LEAD)
                cfo = _decision(handle.id, "d-cfo", "cfo", ["finance"])
                await asyncio.gather(
                    *(attempt(handle, lead) for _ in range(6)),
                    *(attempt(handle, other) for _ in range(2)),
                    *(attempt(handle, cfo) for _ in range(2)),
                )
                for _ in range(600):  # finance decides once level 2 asks
                    state = await handle.query("get_state", result_type=RefundCaseState)
                    if state.status != CaseStatus.AWAITING_APPROVAL:
                        break
                    if state.approval is not None and state.approval.level == 2:
                        await attempt(handle, cfo)
                    await asyncio.sleep(0.05)
                return await handle.result()

            results = await asyncio.gather(*(race(h) for h in handles))
    assert {RefundOutcome.APPROVED} == {r.outcome for r in results}
    for handle in handles:
        assert 1 == _refunds(engine, handle.id), handle.id
        assert 2 == _actions(engine, handle.id).count("approval_decided"), handle.id
        await _replays(handle)
