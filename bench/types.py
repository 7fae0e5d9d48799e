"""Payloads of the bare baseline workflow: pure pydantic, passed through the sandbox."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

__all__ = ["BareDecisionResult", "BareInput", "BareResult", "NoopPayload"]


class BareInput(BaseModel):
    """How many no-op activities to run, and where the (optional) approval gate sits.

    `before` activities run, then the gate opens (the `decide` update is accepted from then on),
    `during` more run, then the workflow waits for the decision and runs `after` more. Without
    a gate (`gate=False`) it runs `before + during + after` activities straight through.
    """

    before: int = Field(ge=0)
    during: int = Field(default=0, ge=0)
    after: int = Field(default=0, ge=0)
    gate: bool = False
    start_to_close: timedelta


class NoopPayload(BaseModel):
    case_id: str
    step: int


class BareDecisionResult(BaseModel):
    request_id: str
    approved: bool


class BareResult(BaseModel):
    case_id: str
    activities: int
    approved: bool | None = None
