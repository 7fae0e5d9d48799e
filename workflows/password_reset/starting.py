"""How a password-reset case starts and reads outside its workflow: the caller's request, the
input built from it (the verified caller as requester), the Temporal UI's first text and the
approval card of a privileged or locked reset.

The request names the account only: never an address to send the code to (the code goes to the
address on file in the directory) and never a password. Pure functions over pydantic models:
the registry hands them to the starter. The workflow never imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits
from workflows.password_reset.types import (
    PasswordResetInput,
    PasswordResetPolicy,
    PasswordResetState,
)

__all__ = ["PasswordResetRequest", "approval_card", "describe", "prepare"]

_UserName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"),
]
_Reason = Annotated[VisibleText, text_limits(500)]


class PasswordResetRequest(BaseModel):
    """An employee (or the service desk for them) asks for a new password."""

    # Extra fields are refused: an address or a password in the request is a mistake to show.
    model_config = ConfigDict(extra="forbid")

    user_name: _UserName = Field(description="The directory's user name", examples=["ana.lima"])
    reason: _Reason | None = Field(default=None, examples=["Forgot it after my holiday"])
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "portal"


def prepare(request: PasswordResetRequest, context: CaseContext) -> PasswordResetInput:
    """The case input: the request, the verified caller, and the policy file the platform read
    (`policies/password_reset.yaml`, with its digest); the typed defaults without one."""
    document = context.policy_document
    policy = PasswordResetPolicy.model_validate(document) if document else PasswordResetPolicy()
    return PasswordResetInput(
        user_name=request.user_name,
        reason=request.reason,
        channel=request.channel,
        requested_by=context.requested_by,
        policy=policy,
    )


def describe(request: PasswordResetRequest) -> CaseText:
    return CaseText(
        summary=f"Password reset for {request.user_name}",
        details=f"**Account:** {request.user_name} · **Channel:** {request.channel}"
        + (f"\n\n**Reason:** {request.reason}" if request.reason else ""),
        customer_id=request.user_name,
    )


def approval_card(case_input: PasswordResetInput | None, state: PasswordResetState) -> ApprovalCard:
    """Who the account is, how far verification got and why a person is asked."""
    employee = state.employee
    facts = [Fact(label="Account", value=state.user_name)]
    if employee is not None:
        facts += [
            Fact(label="Name", value=employee.display_name or "-"),
            Fact(label="Role", value=employee.title or "-"),
            Fact(label="Department", value=employee.department or "-"),
            Fact(label="Manager", value=employee.manager_user_name or "-"),
            Fact(label="Groups", value=", ".join(employee.groups) or "-"),
        ]
    facts += [
        Fact(label="Privileged", value="yes" if state.privileged else "no"),
        Fact(
            label="Verification",
            value=("code verified" if state.verified else f"not verified ({state.attempts} wrong)")
            + (f", sent to {state.code_sent_to}" if state.code_sent_to else ""),
        ),
    ]
    request = state.approval
    return ApprovalCard(
        message=case_input.reason if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.user_name,
        facts=facts,
        ai=AiView(
            recommendation=request.recommendation if request else None,
            reasons=list(request.reasons) if request else [],
        ),
    )
