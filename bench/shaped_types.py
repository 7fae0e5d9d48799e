"""Payload types of `bench_shaped`, the benchmark's same-activity baseline (`bench.shaped`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from workflows.contracts.case import CaseState

__all__ = ["ShapedDecisionResult", "ShapedInput", "ShapedResult", "ShapedState"]


class ShapedInput(BaseModel):
    customer_id: str
    order_id: str
    message: str
    channel: str = "email"
    # The refund policy as Podium's cases carry it: by digest (stored), else the document.
    policy_document: dict[str, Any] | None = None
    policy_digest: str | None = None
    auto_refund_limit: float = 100.0


class ShapedResult(BaseModel):
    case_id: str
    refund_id: str
    decided_by: str
    activities: int


class ShapedDecisionResult(BaseModel):
    decision_id: str
    approver: str


class ShapedState(CaseState):
    """Unused: the registry entry wants a state type."""
