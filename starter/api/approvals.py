"""Routes of approvals, for every process whose cases ask people:

    POST /cases/{case_id}/approve          approve at the current level
    POST /cases/{case_id}/reject           reject (a reason is required)
    POST /cases/{case_id}/request-changes  approve a lower amount
    POST /cases/{case_id}/delegate         let a named person decide at the current level
    GET  /approvals/pending                cases waiting for a person, most urgent SLA first
    GET  /approvals                        an approver's inbox, with time left
    GET  /approvals/{case_id}              one approval as its process presents it

Who decides and in which roles come from the credential, never from the body: a body `approver`
other than the caller is refused (403), body `roles` may only narrow the caller's approval roles.
The case refuses a caller without a role of the level deciding now (403), unless the decision
was delegated to them. `decision_id` (optional) makes a retry return the first result.

`?ack=outcome` (the default): a decision that closes the approval answers once the process has
carried it out (`outcome` set). `?ack=recorded`: it answers as soon as the case has verified and
recorded it (`gate` says whether it closed; `outcome` follows in `GET /cases/{case_id}`), for
processes whose workflow answers that way; the others answer as with `outcome`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, Field, StringConstraints

from core import metrics
from starter.api.deps import Caller, CaseId, Podium, Reader
from starter.api.problems import PROBLEM_RESPONSES
from starter.auth import Principal, forbidden
from starter.client import (
    IDEMPOTENCY_KEY_PATTERN,
    INBOX_LIMIT_MAX,
    PROCESS_PATTERN,
    ROLE_PATTERN,
    ApprovalView,
    DecisionRefused,
    Inbox,
    PendingApproval,
    PodiumClient,
)
from workflows.contracts.approval import ApprovalAction, ApprovalDecisionResult

__all__ = [
    "DecisionBody",
    "DelegateBody",
    "RejectBody",
    "RequestChangesBody",
    "router",
]


_Person = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
_Role = Annotated[str, StringConstraints(strip_whitespace=True, pattern=ROLE_PATTERN)]
_Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2_000)]


Ack = Annotated[
    Literal["outcome", "recorded"],
    Query(
        description="outcome: answer once a closing decision is carried out (default); "
        "recorded: answer once it is verified and recorded"
    ),
]


class DecisionBody(BaseModel):
    approver: _Person | None = Field(
        default=None, description="Optional: must be the caller (the credential's subject)"
    )
    roles: list[_Role] | None = Field(
        default=None,
        max_length=20,
        description="Optional: only these of the caller's approval roles (default: all of them)",
        examples=[["team_lead"]],
    )
    comment: str | None = Field(default=None, max_length=2_000)
    request_id: str | None = Field(
        default=None, min_length=1, description="Defaults to the approval pending right now"
    )
    decision_id: str | None = Field(
        default=None,
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="Retry-safe key: the same id returns the first result (default: new)",
    )


class RejectBody(DecisionBody):
    reason: _Reason = Field(description="Why the request is rejected; the requester is told")


class RequestChangesBody(DecisionBody):
    amount: Decimal = Field(
        gt=0, max_digits=12, decimal_places=2, description="The lower amount to approve, dollars"
    )
    reason: _Reason | None = None


class DelegateBody(DecisionBody):
    to: _Person = Field(description="Who decides instead, at the current level")
    reason: _Reason


def router() -> APIRouter:
    routes = APIRouter(tags=["approvals"])

    @routes.post(
        "/cases/{case_id}/approve",
        response_model=ApprovalDecisionResult,
        responses=PROBLEM_RESPONSES,
    )
    async def approve(
        case_id: CaseId,
        body: Annotated[DecisionBody, Body()],
        podium: Podium,
        caller: Caller,
        ack: Ack = "outcome",
    ) -> ApprovalDecisionResult:
        """Approve at the current level; when that completes the approval, answers once the
        process has carried it out (`gate: approved`), else at once (`gate: open`)."""
        return await _decide(podium, caller, case_id, ApprovalAction.APPROVE, body, ack=ack)

    @routes.post(
        "/cases/{case_id}/reject",
        response_model=ApprovalDecisionResult,
        responses=PROBLEM_RESPONSES,
    )
    async def reject(
        case_id: CaseId,
        body: Annotated[RejectBody, Body()],
        podium: Podium,
        caller: Caller,
        ack: Ack = "outcome",
    ) -> ApprovalDecisionResult:
        """Reject the pending request; answers once the process has carried it out."""
        return await _decide(
            podium, caller, case_id, ApprovalAction.REJECT, body, reason=body.reason, ack=ack
        )

    @routes.post(
        "/cases/{case_id}/request-changes",
        response_model=ApprovalDecisionResult,
        responses=PROBLEM_RESPONSES,
    )
    async def request_changes(
        case_id: CaseId,
        body: Annotated[RequestChangesBody, Body()],
        podium: Podium,
        caller: Caller,
        ack: Ack = "outcome",
    ) -> ApprovalDecisionResult:
        """Approve a lower amount than asked; later levels approve that amount."""
        return await _decide(
            podium,
            caller,
            case_id,
            ApprovalAction.REQUEST_CHANGES,
            body,
            reason=body.reason,
            new_amount_cents=int(body.amount * 100),
            ack=ack,
        )

    @routes.post(
        "/cases/{case_id}/delegate",
        response_model=ApprovalDecisionResult,
        responses=PROBLEM_RESPONSES,
    )
    async def delegate(
        case_id: CaseId,
        body: Annotated[DelegateBody, Body()],
        podium: Podium,
        caller: Caller,
        ack: Ack = "outcome",
    ) -> ApprovalDecisionResult:
        """Let a named person decide at the current level without holding its role."""
        return await _decide(
            podium,
            caller,
            case_id,
            ApprovalAction.DELEGATE,
            body,
            reason=body.reason,
            delegate_to=body.to,
            ack=ack,
        )

    @routes.get(
        "/approvals/pending",
        response_model=list[PendingApproval],
        responses=PROBLEM_RESPONSES,
    )
    async def pending_approvals(
        podium: Podium,
        _: Reader,
        min_amount: Annotated[
            float | None, Query(ge=0, allow_inf_nan=False, description="Dollars, exclusive")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1_000)] = 100,
        role: Annotated[
            str | None,
            Query(
                pattern=ROLE_PATTERN,
                description="Only what this role (or user:<name>) may decide now",
            ),
        ] = None,
        process: Annotated[
            str | None, Query(pattern=PROCESS_PATTERN, description="Only this process")
        ] = None,
    ) -> list[PendingApproval]:
        return await podium.list_pending(
            min_amount=min_amount, limit=limit, role=role, process=process
        )

    @routes.get("/approvals", response_model=Inbox, responses=PROBLEM_RESPONSES)
    async def inbox(
        podium: Podium,
        caller: Reader,
        role: Annotated[
            str | None,
            Query(pattern=ROLE_PATTERN, description="What this role may decide now"),
        ] = None,
        approver: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=128,
                description="Also what was delegated to this person (user:<approver>)",
            ),
        ] = None,
        process: Annotated[
            str | None, Query(pattern=PROCESS_PATTERN, description="Only this process")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=INBOX_LIMIT_MAX)] = 100,
    ) -> Inbox:
        """An approver's inbox from Temporal visibility: the most urgent SLA first, with the time
        left (negative: overdue). Eventually consistent: a decision shows a moment later."""
        if role is None and approver is None:
            # Default: the caller's own inbox (their first approval role, what was delegated).
            role = next(iter(caller.decide_roles), None)
            approver = caller.subject
        return await podium.inbox(role=role, approver=approver, process=process, limit=limit)

    @routes.get(
        "/approvals/{case_id}",
        response_model=ApprovalView,
        responses=PROBLEM_RESPONSES,
    )
    async def approval(case_id: CaseId, podium: Podium, _: Reader) -> ApprovalView:
        """One approval: the case summary and message, the request (level, roles, SLA,
        deadline, reasons), Podium's recommendation and confidence, the decisions so far."""
        return await podium.approval(case_id)

    return routes


def _decision_roles(caller: Principal, body: DecisionBody) -> list[str]:
    """The roles the caller decides in: those its credential grants (an admin: every configured
    approval role), narrowed to the body's `roles` when given."""
    if body.approver is not None and body.approver != caller.subject:
        raise forbidden(
            f"approver '{body.approver}' is not the caller; who decides comes from the credential"
        )
    held = caller.decide_roles
    if body.roles is None:
        return held
    missing = [role for role in body.roles if role not in held]
    if missing:
        raise forbidden(f"'{caller.subject}' may not decide as {', '.join(missing)}")
    return list(body.roles)


async def _decide(
    podium: PodiumClient,
    caller: Principal,
    case_id: str,
    action: ApprovalAction,
    body: DecisionBody,
    *,
    reason: str | None = None,
    new_amount_cents: int | None = None,
    delegate_to: str | None = None,
    ack: str = "outcome",
) -> ApprovalDecisionResult:
    roles = _decision_roles(caller, body)
    try:
        return await _decide_as(
            podium,
            caller,
            roles,
            case_id,
            action,
            body,
            reason=reason,
            new_amount_cents=new_amount_cents,
            delegate_to=delegate_to,
            wait=ack == "outcome",
        )
    except DecisionRefused:
        # The case refused: if the caller holds none of the roles deciding now and nothing was
        # delegated to them, that is a matter of permission (403), not of the case's state.
        state = (await podium.get_case(case_id)).state
        # Only while the approval is still open: a decided one refuses everyone alike (409).
        approval = state.approval if state is not None and state.decision is None else None
        named = (
            {name.strip().casefold() for name in approval.awaiting_people} if approval else set()
        )
        if (
            approval is not None
            and not set(roles) & set(approval.awaiting_roles)
            and caller.subject not in approval.delegates
            and caller.subject.strip().casefold() not in named
        ):
            # A level that names people (user:<name>) waits for them, not for a role.
            wanted = (
                " or ".join([*approval.awaiting_people, *approval.awaiting_roles])
                or "a role of this level"
            )
            raise forbidden(
                f"'{caller.subject}' may not decide at level '{approval.level_name}': "
                f"it needs {wanted}"
            ) from None
        raise


async def _decide_as(
    podium: PodiumClient,
    caller: Principal,
    roles: list[str],
    case_id: str,
    action: ApprovalAction,
    body: DecisionBody,
    *,
    reason: str | None,
    new_amount_cents: int | None,
    delegate_to: str | None,
    wait: bool = True,
) -> ApprovalDecisionResult:
    result = await podium.decide(
        case_id,
        action,
        caller.subject,
        roles=roles,
        comment=body.comment,
        reason=reason,
        new_amount_cents=new_amount_cents,
        delegate_to=delegate_to,
        request_id=body.request_id,
        decision_id=body.decision_id,
        wait=wait,
    )
    metrics.DECISIONS.labels(action=metrics.label(action)).inc()
    return result
