"""Replay the committed histories of every registered process's released workflow paths.

A change to the workflow code that would break running cases (a reordered, added or removed
command without a version patch) fails here, in CI, before it reaches a worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from core.shared_code import share_code
from worker import workflow_modules, workflow_runner
from workflows.operations.workflow import WORKFLOWS as OPERATIONS
from workflows.registry import PROCESSES

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
EXPECTED_PATHS = {
    "auto_resolved",
    "approved_after_escalation",
    "rejected",
    "escalated_expired",
    "needs_human",
    "approved_by_signal",
    "escalated_to_finance",
    "request_changes",
    "delegated",
    "quorum",
    # Patch `refund-receipt-ocr`.
    "receipt_ocr",
    "receipt_mismatch",
    "low_confidence",
    # Patch `refund-policy-v1`.
    "policy_rules",
    # The same, the policy by digest (stored in `policy_versions`).
    "policy_by_digest",
    # Patch `decisions-checked-on-acceptance` (with `signed-decisions`).
    "racing_decisions",
    # Patch `refund-triage-handoff`.
    "triage_unavailable",
    # Patch `audit-activity`.
    "audited_racing_decisions",
    "signals_checked",
}
# The access review: a cycle, and a review of each way it ends (tests/test_access_review.py).
ACCESS_REVIEW_PATHS = {
    "cycle",
    "nothing_to_review",
    "confirmed",
    "revoked",
    "revoked_at_deadline",
    "kept_at_deadline",
}
# Access termination: what an employee who left held, revoked; already gone; unknown
# (tests/test_access_termination.py).
ACCESS_TERMINATION_PATHS = {"revoked", "already_gone", "unknown_employee"}
# Knowledge answer: sure; unsure and approved, rejected, expired (tests/test_knowledge_answer.py);
# the customer writes again while a person reviews (signal `customer_message`).
KNOWLEDGE_ANSWER_PATHS = {
    "answered",
    "reviewed_answered",
    "review_rejected",
    "review_expired",
    "customer_wrote_again",
}
# Handoff: a person answers, re-routes, closes; nobody takes it; the customer writes again while
# it waits (tests/test_handoff.py).
HANDOFF_PATHS = {"answered", "rerouted", "closed", "expired", "customer_wrote_again"}
# The delayed-order inquiry: each way it answers, follows up and ends (tests/test_order_inquiry.py).
ORDER_INQUIRY_PATHS = {
    "on_time_delivered",
    "late_credit",
    "high_value_approved",
    "high_value_rejected",
    "follow_up_slipped",
    "carrier_outage_recovered",
    "carrier_unavailable",
    "customer_wrote_again",
    "delivered_before_subscribed",
}
# Podium's operations (no processes: `workflows/operations/`, tests/test_operations.py).
OPERATIONS_PATHS = {
    "kpi_snapshot": {"taken", "already_taken"},
    "sla_sweep": {"notified", "already_notified"},
}
PATCHED_PATHS = {
    "receipt_ocr",
    "receipt_mismatch",
    "low_confidence",
    "policy_rules",
    "policy_by_digest",
    "racing_decisions",
    "triage_unavailable",
    "audited_racing_decisions",
    "signals_checked",
}


@pytest.mark.parametrize("process", PROCESSES.names)
def test_every_registered_process_has_committed_histories(process: str) -> None:
    """A process in the registry replays its own recorded histories (`<process>-<path>.json`),
    each of its own workflow type: a new process without any fails here."""
    recorded = [p for p in HISTORIES if p.stem.startswith(f"{process}-")]
    assert recorded, f"no committed history for process '{process}' in tests/histories/"
    for path in recorded:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        started = history.events[0].workflow_execution_started_event_attributes
        assert process == started.workflow_type.name, path.name


def test_every_history_belongs_to_a_registered_process() -> None:
    processes = sorted([*PROCESSES.names, *OPERATIONS_PATHS], key=len, reverse=True)
    orphans = [p.name for p in HISTORIES if not any(p.stem.startswith(f"{n}-") for n in processes)]
    assert [] == orphans


def test_every_refund_path_has_a_committed_history() -> None:
    recorded = {p.stem.removeprefix("refund-") for p in HISTORIES if p.stem.startswith("refund-")}
    assert EXPECTED_PATHS <= recorded


def test_every_access_review_path_has_a_committed_history() -> None:
    prefix = "access_review-"
    recorded = {p.stem.removeprefix(prefix) for p in HISTORIES if p.stem.startswith(prefix)}
    assert ACCESS_REVIEW_PATHS <= recorded


def test_every_access_termination_path_has_a_committed_history() -> None:
    prefix = "access_termination-"
    recorded = {p.stem.removeprefix(prefix) for p in HISTORIES if p.stem.startswith(prefix)}
    assert ACCESS_TERMINATION_PATHS <= recorded


def test_every_knowledge_answer_path_has_a_committed_history() -> None:
    prefix = "knowledge_answer-"
    recorded = {p.stem.removeprefix(prefix) for p in HISTORIES if p.stem.startswith(prefix)}
    assert KNOWLEDGE_ANSWER_PATHS <= recorded


def test_every_handoff_path_has_a_committed_history() -> None:
    recorded = {p.stem.removeprefix("handoff-") for p in HISTORIES if p.stem.startswith("handoff-")}
    assert HANDOFF_PATHS <= recorded


def test_every_order_inquiry_path_has_a_committed_history() -> None:
    prefix = "order_inquiry-"
    recorded = {p.stem.removeprefix(prefix) for p in HISTORIES if p.stem.startswith(prefix)}
    assert ORDER_INQUIRY_PATHS <= recorded


@pytest.mark.parametrize("operation", sorted(OPERATIONS_PATHS))
def test_every_operation_path_has_a_committed_history(operation: str) -> None:
    prefix = f"{operation}-"
    recorded = {p.stem.removeprefix(prefix) for p in HISTORIES if p.stem.startswith(prefix)}
    assert OPERATIONS_PATHS[operation] <= recorded


def test_both_sides_of_the_receipt_ocr_patch_are_recorded() -> None:
    """Cases from before the patch (no marker) and after it (a marker) both replay below."""
    patched = set()
    for path in HISTORIES:
        if not path.stem.startswith("refund-"):
            continue
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        if any(
            e.marker_recorded_event_attributes.marker_name == "core_patch"
            and b"refund-receipt-ocr" in e.marker_recorded_event_attributes.SerializeToString()
            for e in history.events
        ):
            patched.add(path.stem.removeprefix("refund-"))
    assert PATCHED_PATHS == patched


def _has_patch(path: Path, patch: str) -> bool:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    return any(
        e.marker_recorded_event_attributes.marker_name == "core_patch"
        and patch.encode() in e.marker_recorded_event_attributes.SerializeToString()
        for e in history.events
    )


@pytest.mark.parametrize("process", ["refund", "password_reset", "agent_assist"])
def test_decisions_checked_on_acceptance_are_recorded_for_every_deciding_process(
    process: str,
) -> None:
    """Each process that takes decisions by update has histories of cases whose validators
    check decision tokens (the patch) and, for those that had them, of cases from before."""
    mine = [p for p in HISTORIES if p.stem.startswith(f"{process}-")]
    checked = [p for p in mine if _has_patch(p, "decisions-checked-on-acceptance")]
    assert checked, f"no {process} history with patch decisions-checked-on-acceptance"
    assert len(checked) < len(mine)


# Processes released after patch `audit-activity`: they never wrote audit events locally.
AUDITED_BY_ACTIVITY_FROM_THE_START = {
    "access_request",
    "access_review",
    "access_termination",
    "knowledge_answer",
    "handoff",
    "order_inquiry",
}


@pytest.mark.parametrize("process", PROCESSES.names)
def test_cases_auditing_by_activity_are_recorded_for_every_process(process: str) -> None:
    """Every process has histories of cases started under patch `audit-activity` (audit events
    as activities); those that wrote them as local activities before keep theirs too."""
    mine = [p for p in HISTORIES if p.stem.startswith(f"{process}-")]
    assert any(_has_patch(p, "audit-activity") for p in mine), process
    if process not in AUDITED_BY_ACTIVITY_FROM_THE_START:
        assert any(_has_patch(p, "audit-local-activity") for p in mine), process


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    """Under the worker's sandbox as it runs: modules passed through, one copy of each workflow
    module's code shared by every case (`share_code`)."""
    share_code(workflow_modules())
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[*PROCESSES.workflows, *OPERATIONS],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
