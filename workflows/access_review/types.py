"""Input, policy, state and result of the `access_review` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workflows.contracts.access import AccessApproval, ReviewItem
from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy
from workflows.contracts.case import CaseState

__all__ = [
    "AccessReviewInput",
    "AccessReviewOutcome",
    "AccessReviewPolicy",
    "AccessReviewPolicyFile",
    "AccessReviewResult",
    "AccessReviewState",
    "AccessReviewStatus",
    "DeadlineAction",
    "ReviewLine",
    "ReviewSchedule",
]

MONTHLY = "0 9 1 * *"  # 09:00 UTC on the first day of every month


class DeadlineAction(StrEnum):
    """What a review nobody answered by its deadline does to the access."""

    REVOKE = "revoke"
    KEEP = "keep"


class ReviewSchedule(BaseModel):
    """When a review cycle starts (the Temporal Schedule `podium up` keeps): a cron
    expression, or an interval; one of them."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(default=MONTHLY, examples=[MONTHLY])
    every: timedelta | None = Field(default=None, examples=["P30D"])
    paused: bool = False

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if self.every is not None and "cron" not in self.model_fields_set:
            self.cron = None  # an interval replaces the default cron
        if (self.cron is None) == (self.every is None):
            raise ValueError("a review schedule has either `cron` or `every`")
        if self.every is not None and self.every < timedelta(minutes=1):
            raise ValueError("`every` is at least a minute")
        return self


def _manager_level() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="reviewer",
                approvers=["$reviewer"],
                sla=timedelta(days=14),
                reminders=[0.5, 0.85],
            )
        ],
        deadline=timedelta(days=14),
    )


class AccessReviewPolicy(BaseModel):
    """How access reviews run (typed defaults; `policies/access_review.yaml` says the same)."""

    model_config = ConfigDict(extra="forbid")

    schedule: ReviewSchedule = Field(default_factory=ReviewSchedule)
    reviewed: list[AccessApproval] = Field(
        default_factory=lambda: [AccessApproval.SENSITIVE],
        min_length=1,
        description="The catalogue's access levels reviewed, by their `approval`",
    )
    approval: ApprovalPolicy = Field(
        default_factory=_manager_level,
        description="How the reviewer is asked: `$reviewer` is the member's manager (else the "
        "application's owner); its deadline is the review's",
    )
    on_deadline: DeadlineAction = DeadlineAction.REVOKE


class AccessReviewPolicyFile(AccessReviewPolicy):
    """`policies/access_review.yaml` as the registry reads it: the policy, a `version` label,
    no unknown field; `digest` is set by the loader from the file's bytes."""

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class AccessReviewInput(BaseModel):
    """A review cycle (`review` None: list what to review, ask every reviewer, wait for all),
    or one review of the cycle `cycle_id` (a child case)."""

    requested_by: str = Field(min_length=1, max_length=128, description="Who started it")
    policy: AccessReviewPolicy = Field(default_factory=AccessReviewPolicy)
    policy_version: str = Field(default="typed-defaults", max_length=64)
    review: ReviewItem | None = None
    cycle_id: str | None = Field(default=None, max_length=200)


class AccessReviewStatus(StrEnum):
    LISTING = "listing"
    REVIEWING = "reviewing"  # a cycle: its reviews are open
    AWAITING_REVIEW = "awaiting_review"  # a review: the reviewer's answer
    REVOKING = "revoking"
    COMPLETED = "completed"


class AccessReviewOutcome(StrEnum):
    # a cycle
    CYCLE_COMPLETED = "cycle_completed"
    NOTHING_TO_REVIEW = "nothing_to_review"
    # a review
    CONFIRMED = "confirmed"  # the reviewer keeps the access
    REVOKED = "revoked"  # the reviewer revoked it
    REVOKED_AT_DEADLINE = "revoked_at_deadline"  # no answer; the policy revokes
    KEPT_AT_DEADLINE = "kept_at_deadline"  # no answer; the policy keeps
    NO_REVIEWER = "no_reviewer"  # nobody but the member could review: handed to a person
    DIRECTORY_UNAVAILABLE = "directory_unavailable"


class ReviewLine(BaseModel):
    """One review of a cycle, as the cycle shows it."""

    case_id: str
    employee: str
    application: str
    access_level: str
    reviewer: str | None
    outcome: str | None = None


class AccessReviewState(CaseState):
    """`get_state`: a cycle's reviews, or one review's membership and reviewer."""

    cycle_id: str | None = None
    review: ReviewItem | None = None
    reviewer: str | None = None
    policy_version: str | None = None
    on_deadline: DeadlineAction = DeadlineAction.REVOKE
    deadline_at: datetime | None = None
    catalogue_version: str | None = None
    catalogue_digest: str | None = None
    reviews: list[ReviewLine] = Field(default_factory=list)
    managers_without_reviews: list[str] = Field(default_factory=list)
    removed: bool = Field(default=False, description="This review removed the membership")
    revoked_at: datetime | None = None
    reason: str | None = None


class AccessReviewResult(BaseModel):
    case_id: str
    outcome: AccessReviewOutcome
    reviews: int = Field(default=0, description="A cycle: reviews asked")
    counts: dict[str, int] = Field(default_factory=dict, description="A cycle: per outcome")
    removed: int = Field(default=0, description="Memberships removed (one SCIM write each)")
    managers_without_reviews: list[str] = Field(default_factory=list)
    policy_version: str | None = None
    reason: str = ""
