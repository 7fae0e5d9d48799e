"""Input, state and result of the `password_reset` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
Nothing here ever holds a one-time code or a password: the case refers to code attempts by id.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from activities.types import EmployeeInfo
from workflows.contracts.approval import ApprovalLevel, ApprovalPolicy, BreachAction
from workflows.contracts.case import CaseState

__all__ = [
    "CodeAttemptInput",
    "CodeAttemptResult",
    "PasswordResetInput",
    "PasswordResetOutcome",
    "PasswordResetPolicy",
    "PasswordResetPolicyFile",
    "PasswordResetResult",
    "PasswordResetState",
    "PasswordResetStatus",
]


def _it_security_approval() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="it_security",
                approver_roles=["it_security"],
                sla=timedelta(hours=4),
                reminders=[0.5],
            )
        ],
        deadline=timedelta(hours=24),
    )


def _service_desk_review() -> ApprovalPolicy:
    return ApprovalPolicy(
        levels=[
            ApprovalLevel(
                name="service_desk",
                approver_roles=["it_service_desk"],
                sla=timedelta(hours=4),
                reminders=[0.5],
                on_breach=BreachAction.BACKUP,
                backup_roles=["it_security"],
            )
        ],
        deadline=timedelta(hours=48),
    )


class PasswordResetPolicy(BaseModel):
    """How much a reset proves before it acts, and who decides when code alone is not enough.
    Fixed on the case when it starts (history keeps it): read from `policies/password_reset.yaml`
    (`PasswordResetPolicyFile`), these defaults when policy as code is off."""

    version: str | None = Field(default=None, description="The policy file's human label")
    digest: str | None = Field(
        default=None, description="Short sha256 of the policy file the case started with"
    )

    code_ttl: timedelta = Field(default=timedelta(minutes=10), gt=timedelta(0))
    max_attempts: int = Field(default=3, ge=1, le=10)
    privileged_groups: list[str] = Field(
        default_factory=lambda: ["admins", "finance"],
        description="Members of these directory groups always need a person's approval",
    )
    privileged_approval: ApprovalPolicy = Field(default_factory=_it_security_approval)
    locked_review: ApprovalPolicy = Field(
        default_factory=_service_desk_review,
        description="Who takes over a case locked after too many wrong codes",
    )


class PasswordResetPolicyFile(PasswordResetPolicy):
    """`policies/password_reset.yaml` as the registry reads it: the policy, with a `version`
    label, and no field it does not know (a typo is an error, not a default). `digest` is set by
    the loader from the file's bytes, never by the file."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)


class PasswordResetInput(BaseModel):
    user_name: str = Field(min_length=1, max_length=128, examples=["ana.lima"])
    reason: str | None = Field(default=None, max_length=500)
    channel: str = Field(default="portal", max_length=32)
    requested_by: str = Field(min_length=1, max_length=128, description="The verified caller")
    policy: PasswordResetPolicy = Field(default_factory=PasswordResetPolicy)


class PasswordResetStatus(StrEnum):
    LOOKING_UP = "looking_up"
    AWAITING_CODE = "awaiting_code"
    AWAITING_APPROVAL = "awaiting_approval"
    LOCKED = "locked"
    RESETTING = "resetting"
    COMPLETED = "completed"


class PasswordResetOutcome(StrEnum):
    RESET = "reset"  # end to end, no person involved
    RESET_AFTER_APPROVAL = "reset_after_approval"  # privileged account, a person approved
    RESET_AFTER_REVIEW = "reset_after_review"  # locked, a person verified and approved
    REJECTED = "rejected"  # a person said no
    APPROVAL_EXPIRED = "approval_expired"  # nobody decided before the deadline
    LOCKED = "locked"  # too many wrong codes, and the review refused or expired
    CODE_EXPIRED = "code_expired"  # no right code within its lifetime
    UNKNOWN_EMPLOYEE = "unknown_employee"
    INACTIVE_EMPLOYEE = "inactive_employee"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"  # handed to a person


class CodeAttemptInput(BaseModel):
    """What the employee entered, by reference: the entry point stored it
    (`activities.identity.record_code_attempt`); the case never sees the code."""

    attempt_id: str = Field(min_length=3, max_length=64, pattern=r"^A-[0-9a-f]{8,60}$")


class CodeAttemptResult(BaseModel):
    verified: bool
    reason: str
    attempts: int
    attempts_left: int
    status: PasswordResetStatus


class PasswordResetState(CaseState):
    """The `get_state` query; `approval` is the pending (or last) approval of the case."""

    user_name: str
    employee: EmployeeInfo | None = None
    privileged: bool = False
    verified: bool = False
    code_sent_to: str | None = None
    code_expires_at: datetime | None = None
    attempts: int = 0
    reset_at: datetime | None = None
    reason: str | None = None


class PasswordResetResult(BaseModel):
    case_id: str
    outcome: PasswordResetOutcome
    automated: bool = Field(description="Reset with no person involved")
    verified: bool
    privileged: bool
    attempts: int
    reset_at: datetime | None = None
    reason: str
