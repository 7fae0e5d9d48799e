"""Replay the committed histories of every released refund workflow path.

A change to the workflow code that would break running cases (a reordered, added or removed
command without a version patch) fails here, in CI, before it reaches a worker.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS, workflow_runner

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
}


def test_every_refund_path_has_a_committed_history() -> None:
    recorded = {p.stem.removeprefix("refund-") for p in HISTORIES if p.stem.startswith("refund-")}
    assert EXPECTED_PATHS <= recorded


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    await replayer.replay_workflow(history)
