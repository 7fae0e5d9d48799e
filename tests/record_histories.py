"""Record the histories the replay test checks: one per path of every released workflow version.

    .venv/bin/python -m tests.record_histories      # or: make histories
    .venv/bin/python -m tests.record_histories receipt_ocr low_confidence   # only these

Runs each scenario on the time-skipping test server (real systems-of-record activities on a
temporary database, deterministic model fakes; the real embedded OCR for the receipt scenarios,
on the committed fixture images) and writes `tests/histories/<workflow>-<path>.json`.
Re-record only for a deliberate, versioned change: the committed files are what running cases
look like, and the replay test fails when the workflow code can no longer replay them. A new
path of a new version is recorded alone, by name, next to the histories of the older versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.policy import PolicyVersions
from core.admission import AdmissionInterceptor
from core.policy import DEFAULT_POLICY_FILE, load_policy
from tests.conftest import TEMPORAL_TEST_SERVER, register_search_attributes
from tests.fixtures.make_receipts import FIXTURES_DIR
from tests.helpers import (
    document_activities,
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seed_orders,
    seeded_engine,
    signed,
    store_document,
)
from workflows.contracts.approval import ApprovalDecisionInput, ApprovalLevel, ApprovalPolicy
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseState,
    RefundOutcome,
    RefundPolicy,
    RiskLevel,
)
from workflows.registry import PROCESSES

HISTORIES = Path(__file__).parent / "histories"

Scenario = Callable[[WorkflowEnvironment, WorkflowHandle[object, object]], Awaitable[None]]


async def _approval_pending(handle: WorkflowHandle[object, object]) -> RefundCaseState:
    for _ in range(200):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.approval is not None and state.status == CaseStatus.AWAITING_APPROVAL:
            return state
        await asyncio.sleep(0.02)
    raise RuntimeError("no approval was requested")


def _decision(**fields: Any) -> ApprovalDecisionInput:
    fields.setdefault("request_id", "approval-1")
    fields.setdefault("action", "approve")
    return ApprovalDecisionInput(**fields)


LEAD = ["team_lead"]


async def _nothing(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    return None


async def _approve_after_escalation(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    await _approval_pending(handle)
    await env.sleep(timedelta(days=3))  # two reminders, then the SLA escalates
    await handle.execute_update(
        "decide", _decision(decision_id="d-1", approver="lead", approver_roles=LEAD)
    )


async def _approve(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    await _approval_pending(handle)
    await handle.execute_update(
        "decide", _decision(decision_id="d-1", approver="lead", approver_roles=LEAD)
    )


async def _reject(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    await _approval_pending(handle)
    await handle.execute_update(
        "decide",
        _decision(
            decision_id="d-1",
            action="reject",
            approver="lead",
            approver_roles=LEAD,
            reason="item was used",
        ),
    )


async def _signal_paths(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    """High risk, decided by signals: a refused one, the team lead, then finance."""
    await _approval_pending(handle)
    await handle.signal("approval_decision", _decision(request_id="bad", approver="x"))
    await handle.signal(
        "approval_decision",
        ApprovalDecisionInput(
            request_id="approval-1", approve=True, approver="ops", approver_roles=LEAD
        ),
    )
    await handle.signal(
        "approval_decision",
        _decision(decision_id="d-2", approver="cfo", approver_roles=["finance"]),
    )


async def _escalate_to_finance(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    await _approval_pending(handle)
    await env.sleep(timedelta(hours=49))  # the team lead's SLA passes: finance decides
    await handle.execute_update(
        "decide", _decision(decision_id="d-1", approver="cfo", approver_roles=["finance"])
    )


async def _request_changes(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    await _approval_pending(handle)
    await handle.execute_update(
        "decide",
        _decision(
            decision_id="d-1",
            action="request_changes",
            approver="lead",
            approver_roles=LEAD,
            new_amount_cents=12_000,
            reason="partly used",
        ),
    )


async def _delegate(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    await _approval_pending(handle)
    await handle.execute_update(
        "decide",
        _decision(
            decision_id="d-1",
            action="delegate",
            approver="lead",
            approver_roles=LEAD,
            delegate_to="bob",
            reason="on leave",
        ),
    )
    await handle.execute_update("decide", _decision(decision_id="d-2", approver="bob"))


async def _quorum(env: WorkflowEnvironment, handle: WorkflowHandle[object, object]) -> None:
    """Two of the panel approve; the first one's retry returns its first result."""
    await _approval_pending(handle)
    first = _decision(decision_id="d-1", approver="alice", approver_roles=LEAD)
    await handle.execute_update("decide", first)
    await handle.execute_update("decide", first)
    await handle.execute_update(
        "decide", _decision(decision_id="d-2", approver="bob", approver_roles=LEAD)
    )


async def _racing_decisions(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    """Patch `decisions-checked-on-acceptance`: tokens checked by the validators. Racing
    updates at level 1 (the same decision four times by `decide` and once by `record_decision`,
    another team lead's twice, a forged one), then finance."""
    await _approval_pending(handle)
    lead = signed(handle.id, _decision(decision_id="d-1", approver="lead", approver_roles=LEAD))
    other = signed(handle.id, _decision(decision_id="d-2", approver="lead2", approver_roles=LEAD))
    forged = _decision(decision_id="d-x", approver="mallory", approver_roles=LEAD)

    async def attempt(update: str, decision: ApprovalDecisionInput) -> None:
        with contextlib.suppress(WorkflowUpdateFailedError):
            await handle.execute_update(update, decision)

    await asyncio.gather(
        *(attempt("decide", lead) for _ in range(4)),
        attempt("record_decision", lead),
        *(attempt("decide", other) for _ in range(2)),
        attempt("decide", forged),
    )
    await handle.execute_update(
        "decide",
        signed(handle.id, _decision(decision_id="d-3", approver="cfo", approver_roles=["finance"])),
    )


async def _signals_checked(
    env: WorkflowEnvironment, handle: WorkflowHandle[object, object]
) -> None:
    """Patch `audit-activity`: audit events and signed decision signals checked by activities.
    High risk: a forged signal (refused and audited), the team lead's signed one, then
    finance's by update."""
    await _approval_pending(handle)
    await handle.signal(
        "approval_decision", _decision(decision_id="d-x", approver="mallory", approver_roles=LEAD)
    )
    await handle.signal(
        "approval_decision",
        signed(handle.id, _decision(decision_id="d-1", approver="lead", approver_roles=LEAD)),
    )
    for _ in range(500):  # the signal's token is checked by an activity first
        state = await _approval_pending(handle)
        if state.approval is not None and state.approval.level == 2:
            break
        await asyncio.sleep(0.02)
    await handle.execute_update(
        "decide",
        signed(handle.id, _decision(decision_id="d-2", approver="cfo", approver_roles=["finance"])),
    )


_PANEL = ApprovalPolicy(
    levels=[ApprovalLevel(name="panel", approver_roles=LEAD, quorum=2, reminders=[0.5])]
)
QUORUM_POLICY = RefundPolicy(approvals={RiskLevel.MEDIUM: _PANEL, RiskLevel.HIGH: _PANEL})

SCENARIOS: dict[str, tuple[str, str | None, str, Scenario, RefundPolicy | None]] = {
    "auto_resolved": ("C-1001", "O-5001", "refund O-5001 please", _nothing, None),
    "approved_after_escalation": (
        "C-1002",
        "O-5003",
        "refund O-5003",
        _approve_after_escalation,
        None,
    ),
    "rejected": ("C-1002", "O-5003", "refund O-5003", _reject, None),
    "escalated_expired": ("C-1002", "O-5004", "refund O-5004", _nothing, None),
    "needs_human": ("C-1001", "O-9999", "refund please", _nothing, None),
    "approved_by_signal": ("C-1004", "O-5007", "refund O-5007", _signal_paths, None),
    "escalated_to_finance": ("C-1002", "O-5004", "refund O-5004", _escalate_to_finance, None),
    "request_changes": ("C-1002", "O-5003", "refund O-5003", _request_changes, None),
    "delegated": ("C-1002", "O-5003", "refund O-5003", _delegate, None),
    "quorum": ("C-1002", "O-5003", "refund O-5003", _quorum, QUORUM_POLICY),
    # Patch `refund-receipt-ocr`: a receipt gives the order id; a receipt whose total is not
    # the order's goes to a person; triage with no confident model goes to a person.
    "receipt_ocr": (
        "C-1001",
        None,
        "Please refund my breakfast, receipt attached.",
        _nothing,
        None,
    ),
    "receipt_mismatch": ("C-1001", None, "Refund please, confirmation attached.", _reject, None),
    "low_confidence": ("C-1001", "O-5001", "not sure what to do, O-5001 broke", _approve, None),
    # Patch `refund-policy-v1`: the shipped policy file's rules decide (auto-approve).
    "policy_rules": ("C-1001", "O-5001", "refund O-5001 please", _nothing, None),
    # The same, the policy by reference: the case carries its digest (table policy_versions).
    "policy_by_digest": ("C-1001", "O-5001", "refund O-5001 please", _nothing, None),
    # Patch `decisions-checked-on-acceptance`: racing signed decisions by update.
    "racing_decisions": ("C-1002", "O-5004", "refund O-5004", _racing_decisions, None),
    # Patch `audit-activity`.
    "audited_racing_decisions": ("C-1002", "O-5004", "refund O-5004", _racing_decisions, None),
    "signals_checked": ("C-1002", "O-5004", "refund O-5004", _signals_checked, None),
}
# Scenarios started with the shipped policy file (policies/refund.yaml) on the case.
POLICY_FILE_SCENARIOS = {"policy_rules", "policy_by_digest"}
# Of those, the scenarios whose case names its policy by digest (stored first).
POLICY_BY_DIGEST_SCENARIOS = {"policy_by_digest"}
# Receipt scenarios: the fixture image attached to the case, and the orders it names (seeded).
RECEIPTS: dict[str, tuple[str, dict[str, tuple[str, int, str]]]] = {
    "receipt_ocr": ("cafe_receipt_gbp.png", {"O-7781": ("C-1001", 2_070, "GBP")}),
    # The confirmation says $129.99; the order is $99.99.
    "receipt_mismatch": ("order_confirmation_usd.png", {"O-120934": ("C-1001", 9_999, "USD")}),
}

# The process these scenarios drive, as the registry describes it (workflow type, result).
REFUND = PROCESSES.get("refund")

# What each path must end in: a scenario that drifts onto another path fails the recording.
OUTCOMES = {
    "auto_resolved": RefundOutcome.AUTO_RESOLVED,
    "approved_after_escalation": RefundOutcome.APPROVED,
    "rejected": RefundOutcome.REJECTED,
    "escalated_expired": RefundOutcome.ESCALATED_EXPIRED,
    "needs_human": RefundOutcome.NEEDS_HUMAN,
    "approved_by_signal": RefundOutcome.APPROVED,
    "escalated_to_finance": RefundOutcome.APPROVED,
    "request_changes": RefundOutcome.APPROVED,
    "delegated": RefundOutcome.APPROVED,
    "quorum": RefundOutcome.APPROVED,
    "receipt_ocr": RefundOutcome.AUTO_RESOLVED,
    "receipt_mismatch": RefundOutcome.REJECTED,
    "low_confidence": RefundOutcome.APPROVED,
    "policy_rules": RefundOutcome.AUTO_RESOLVED,
    "policy_by_digest": RefundOutcome.AUTO_RESOLVED,
    "racing_decisions": RefundOutcome.APPROVED,
    "audited_racing_decisions": RefundOutcome.APPROVED,
    "signals_checked": RefundOutcome.APPROVED,
}


async def record(names: list[str] | None = None) -> None:
    unknown = sorted(set(names or ()) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        interceptors=[AdmissionInterceptor()],
        test_server_existing_path=str(TEMPORAL_TEST_SERVER),
    )
    await register_search_attributes(env.client)
    HISTORIES.mkdir(exist_ok=True)
    try:
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(4) as executor:
            for name, (customer, order, text, scenario, policy) in SCENARIOS.items():
                if names and name not in names:
                    continue
                folder = Path(tmp) / name
                folder.mkdir()
                engine = seeded_engine(folder, now=await env.get_current_time())
                attachment_id = None
                activities = [
                    *real_system_activities(engine),
                    fake_triage,
                    fake_draft,
                ]
                document = (
                    load_policy(DEFAULT_POLICY_FILE).model_dump(mode="json")
                    if name in POLICY_FILE_SCENARIOS
                    else None
                )
                digest = None
                if document is not None and name in POLICY_BY_DIGEST_SCENARIOS:
                    digest = PolicyVersions(engine).save(REFUND.name, document)
                stack = ExitStack()
                if name in RECEIPTS:
                    image, orders = RECEIPTS[name]
                    seed_orders(engine, await env.get_current_time(), orders)
                    attachment_id = store_document(engine, (FIXTURES_DIR / image).read_bytes())
                    activities += stack.enter_context(document_activities(engine))
                worker = make_worker(env.client, activities, executor)
                with stack:
                    async with worker:
                        handle = await env.client.start_workflow(
                            REFUND.name,
                            RefundCaseInput(
                                channel="email",
                                customer_id=customer,
                                order_id=order,
                                message=text,
                                policy=policy or RefundPolicy(),
                                attachment_id=attachment_id,
                                policy_document=None if digest else document,
                                policy_digest=digest,
                            ),
                            id=f"{REFUND.case_id_prefix}history-{name}",
                            task_queue=worker.task_queue,
                            result_type=REFUND.result,
                        )
                        await scenario(env, handle)
                        result = await handle.result()
                        history = await handle.fetch_history()
                if result.outcome != OUTCOMES[name]:
                    raise RuntimeError(f"{name}: ended {result.outcome}, not {OUTCOMES[name]}")
                engine.dispose()
                path = HISTORIES / f"{REFUND.name}-{name}.json"
                path.write_text(history.to_json())
                print(f"recorded {path} ({len(history.events)} events)")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
