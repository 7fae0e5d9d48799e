"""How an access-request case starts and reads outside its workflow: the caller's request, the
input built from it (the verified caller as requester, the policy file), the Temporal UI's first
text and the approval card the manager (or the app owner) reads.

Pure functions over pydantic models: the registry hands them to the starter. The workflow never
imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workflows.access_request.types import AccessRequestInput, AccessRequestState
from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.policy import PolicyDocument
from workflows.contracts.text import VisibleText, text_limits

__all__ = [
    "TYPED_DEFAULTS",
    "AccessRequestRequest",
    "approval_card",
    "describe",
    "prepare",
    "typed_defaults",
]

TYPED_DEFAULTS = "typed-defaults"  # the policy version of a case started without the file


def typed_defaults() -> dict[str, object]:
    """The access policy when policy as code is off (`PODIUM_POLICY_AS_CODE=false`): the same
    rules and approval chains as `policies/access_request.yaml` (a test keeps them equal)."""

    def level(name: str, who: str, sla: str, reminders: list[float]) -> dict[str, object]:
        return {"name": name, "approvers": [who], "sla": sla, "reminders": reminders}

    owner = level("app_owner", "$app_owner", "P7D", [0.3, 0.6])
    owner["approver_roles"] = ["it_security"]
    return PolicyDocument.model_validate(
        {
            "version": TYPED_DEFAULTS,
            "digest": TYPED_DEFAULTS,
            "autonomy": [
                {
                    "name": "sensitive_access",
                    "when": 'system_sensitivity == "sensitive"',
                    "decision": "human",
                    "approval": "manager_and_owner",
                    "explain": "sensitive access ({employee_role}): the manager, then the "
                    "application's owner",
                },
                {
                    "name": "pre_approved_standard",
                    "when": 'eligible and system_sensitivity == "standard"',
                    "decision": "auto_approve",
                    "explain": "standard access pre-approved for the employee's department or "
                    "role ({employee_role})",
                },
                {
                    "name": "default",
                    "when": "true",
                    "decision": "human",
                    "approval": "manager",
                    "explain": "not pre-approved for {employee_role}: the manager decides",
                },
            ],
            "approvals": {
                "manager": {
                    "levels": [level("manager", "$manager", "P5D", [0.4, 0.8])],
                    "deadline": "P5D",
                    "default_action": "deny",
                },
                "manager_and_owner": {
                    "levels": [level("manager", "$manager", "P7D", [0.3, 0.6]), owner],
                    "deadline": "P7D",
                    "default_action": "deny",
                },
            },
        }
    ).model_dump(mode="json")


_UserName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"),
]
_Name = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9_-]{1,64}$")
]
_Justification = Annotated[VisibleText, text_limits(1_000)]


class AccessRequestRequest(BaseModel):
    """An employee (or the service desk for them) asks for access to an application."""

    model_config = ConfigDict(extra="forbid")

    employee: _UserName = Field(description="The directory's user name", examples=["ana.lima"])
    application: _Name = Field(description="An application of the catalogue", examples=["github"])
    access_level: _Name = Field(description="One of the application's levels", examples=["read"])
    justification: _Justification = Field(examples=["I join the platform team's on-call"])
    duration_days: int | None = Field(
        default=None, ge=1, le=3650, description="Time-bound access: revoked when it runs out"
    )
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,32}$")] = "portal"


def prepare(request: AccessRequestRequest, context: CaseContext) -> AccessRequestInput:
    return AccessRequestInput(
        employee=request.employee,
        application=request.application,
        access_level=request.access_level,
        justification=request.justification,
        duration_days=request.duration_days,
        channel=request.channel,
        requested_by=context.requested_by,
        # Policy as code off: the typed defaults, the file's rules (never a 500).
        policy_document=context.policy_document or typed_defaults(),
    )


def describe(request: AccessRequestRequest) -> CaseText:
    duration = f"{request.duration_days} days" if request.duration_days else "no end date asked"
    return CaseText(
        summary=f"Access to {request.application} ({request.access_level}) for {request.employee}",
        details=f"**Employee:** {request.employee} · **Application:** {request.application} · "
        f"**Level:** {request.access_level} · **Duration:** {duration}\n\n"
        f"**Justification:** {request.justification}",
        customer_id=request.employee,
    )


def approval_card(case_input: AccessRequestInput | None, state: AccessRequestState) -> ApprovalCard:
    """Who asks for what, why, for how long, and why a person is asked."""
    employee = state.employee
    entitlement = state.entitlement
    facts = [
        Fact(label="Employee", value=state.employee_name),
        Fact(label="Application", value=state.application_title or state.application),
        Fact(label="Access level", value=state.access_level),
    ]
    if employee is not None:
        facts += [
            Fact(label="Name", value=employee.display_name or "-"),
            Fact(label="Role", value=employee.title or "-"),
            Fact(label="Department", value=employee.department or "-"),
            Fact(label="Manager", value=employee.manager_user_name or "-"),
        ]
    if entitlement is not None:
        facts += [
            Fact(label="Group", value=entitlement.group),
            Fact(label="Sensitive", value="yes" if state.sensitive else "no"),
            Fact(label="App owner", value=state.app_owner or "-"),
        ]
    days = case_input.duration_days if case_input else None
    if days is None and entitlement is not None:
        days = entitlement.max_days
    facts.append(Fact(label="Duration", value=f"{days} days" if days else "no expiry"))
    if state.expires_at is not None:
        facts.append(Fact(label="Expires", value=state.expires_at.strftime("%Y-%m-%d")))
    if state.catalogue_digest:
        facts.append(
            Fact(label="Catalogue", value=f"{state.catalogue_version} ({state.catalogue_digest})")
        )
    request = state.approval
    return ApprovalCard(
        message=case_input.justification if case_input else None,
        channel=case_input.channel if case_input else None,
        customer_id=state.employee_name,
        facts=facts,
        ai=AiView(
            recommendation=request.recommendation if request else None,
            risk="high" if state.sensitive else "low",
            eligible=state.pre_approved,
            reasons=list(request.reasons) if request else [],
        ),
    )
