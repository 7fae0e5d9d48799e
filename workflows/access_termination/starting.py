"""How an access-termination case starts and reads outside its workflow: the request (an
employee the directory says left), its case key (one case per employee: a repeated termination
finds the first), the Temporal UI's first text and its card.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.access_termination.types import AccessTerminationInput, AccessTerminationState
from workflows.contracts import search_attributes as sa
from workflows.contracts.case import ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits

__all__ = ["AccessTerminationRequest", "approval_card", "case_key", "describe", "prepare"]

_UserName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9][a-z0-9._@+-]{0,127}$"
    ),
]
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


class AccessTerminationRequest(BaseModel):
    """The directory says an employee left: revoke everything Podium granted them."""

    model_config = ConfigDict(extra="forbid")

    employee: _UserName = Field(description="The directory's user name", examples=["ana.lima"])
    reason: Annotated[VisibleText, text_limits(200)] = Field(
        default="terminated in the directory", examples=["left the company"]
    )


def case_key(request: AccessTerminationRequest) -> str:
    """One case per employee: the user name, or for an address its pseudonym (never an email
    in a workflow id)."""
    return _KEY_UNSAFE.sub("-", sa.customer_id_attribute(request.employee))[:100]


def prepare(request: AccessTerminationRequest, context: CaseContext) -> AccessTerminationInput:
    return AccessTerminationInput(
        employee=request.employee, reason=request.reason, requested_by=context.requested_by
    )


def describe(request: AccessTerminationRequest) -> CaseText:
    return CaseText(
        summary=f"Access termination for {sa.customer_id_attribute(request.employee)}",
        details="Every group membership Podium granted the employee and they still hold is "
        "removed (one directory write each), also those of finished access requests.",
        customer_id=request.employee,
    )


def approval_card(
    case_input: AccessTerminationInput | None, state: AccessTerminationState
) -> ApprovalCard:
    """A termination asks nobody; the card says what it revoked."""
    facts = [Fact(label="Employee", value=state.employee)]
    facts += [
        Fact(label=grant.group, value=grant.state.value if grant.state else "not revoked")
        for grant in state.grants
    ]
    return ApprovalCard(
        message=case_input.reason if case_input else None,
        channel="directory",
        customer_id=state.employee,
        facts=facts,
    )
