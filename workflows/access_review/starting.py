"""How an access-review case starts and reads outside its workflow: the request that opens a
cycle now (the Temporal Schedule opens the monthly ones), the input built from it (the policy
file, or the typed defaults), the Temporal UI's first text and the card a reviewer reads.

Pure functions over pydantic models: the registry and the schedule hand them to the starter.
The workflow never imports this module.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from workflows.access_review.types import (
    AccessReviewInput,
    AccessReviewPolicy,
    AccessReviewPolicyFile,
    AccessReviewState,
)
from workflows.contracts.case import AiView, ApprovalCard, CaseContext, CaseText, Fact
from workflows.contracts.text import VisibleText, text_limits

__all__ = [
    "TYPED_DEFAULTS",
    "AccessReviewRequest",
    "approval_card",
    "describe",
    "policy_of",
    "prepare",
]

TYPED_DEFAULTS = "typed-defaults"  # the policy version of a cycle without a policy file


class AccessReviewRequest(BaseModel):
    """Open an access review cycle now (the schedule opens the regular ones)."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[VisibleText, text_limits(200)] | None = Field(
        default=None, description="Why a cycle now", examples=["audit follow-up"]
    )


def policy_of(document: dict[str, object] | None) -> tuple[AccessReviewPolicy, str]:
    """The policy a cycle runs under and its version: the policy file's (validated, with its
    digest), else the typed defaults."""
    if document is None:
        return AccessReviewPolicy(), TYPED_DEFAULTS
    read = AccessReviewPolicyFile.model_validate(document)
    return AccessReviewPolicy.model_validate(
        read.model_dump(exclude={"version", "digest"})
    ), read.digest or read.version


def prepare(request: AccessReviewRequest, context: CaseContext) -> AccessReviewInput:
    policy, version = policy_of(context.policy_document)
    return AccessReviewInput(
        requested_by=context.requested_by, policy=policy, policy_version=version
    )


def describe(request: AccessReviewRequest) -> CaseText:
    why = f" ({request.note})" if request.note else ""
    return CaseText(
        summary=f"Access review cycle{why}",
        details="Every manager confirms or revokes the sensitive access their reports hold; "
        "one review case per membership, in the reviewer's inbox.",
    )


def approval_card(case_input: AccessReviewInput | None, state: AccessReviewState) -> ApprovalCard:
    """Who holds what, who reviews it, and what silence does."""
    item = state.review
    facts: list[Fact] = []
    if item is not None:
        facts += [
            Fact(label="Employee", value=item.user_name),
            Fact(label="Role", value=item.title or "-"),
            Fact(label="Department", value=item.department or "-"),
            Fact(label="Manager", value=item.manager or "-"),
            Fact(label="Application", value=item.application_title),
            Fact(label="Access level", value=item.access_level),
            Fact(label="Group", value=item.group),
            Fact(label="Reviewer", value=state.reviewer or "-"),
        ]
    facts += [
        Fact(label="Approve", value="keeps the access"),
        Fact(label="Reject", value="revokes it (one directory write); a reason is required"),
        Fact(label="No answer by the deadline", value=state.on_deadline.value),
    ]
    if state.deadline_at is not None:
        facts.append(Fact(label="Deadline", value=state.deadline_at.strftime("%Y-%m-%d %H:%M UTC")))
    if state.cycle_id:
        facts.append(Fact(label="Cycle", value=state.cycle_id))
    if state.policy_version:
        facts.append(Fact(label="Policy", value=state.policy_version))
    request = state.approval
    return ApprovalCard(
        message=None,
        channel="access_review",
        customer_id=item.user_name if item else None,
        facts=facts,
        ai=AiView(
            recommendation=None,
            risk="high",
            reasons=list(request.reasons) if request else [],
        ),
    )
