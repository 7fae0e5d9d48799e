"""Input, messages, state and result of the `access_request` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from activities.types import EmployeeInfo
from workflows.contracts.access import Entitlement
from workflows.contracts.case import CaseState

__all__ = [
    "AccessRequestInput",
    "AccessRequestOutcome",
    "AccessRequestResult",
    "AccessRequestState",
    "AccessRequestStatus",
    "EmployeeTerminatedInput",
    "ExtensionInput",
    "ExtensionResult",
]


class AccessRequestInput(BaseModel):
    employee: str = Field(min_length=1, max_length=128, description="The directory's user name")
    application: str = Field(min_length=1, max_length=64, examples=["github"])
    access_level: str = Field(min_length=1, max_length=64, examples=["read"])
    justification: str = Field(min_length=1, max_length=1_000)
    duration_days: int | None = Field(default=None, ge=1, le=3650)
    channel: str = Field(default="portal", max_length=32)
    requested_by: str = Field(min_length=1, max_length=128, description="The verified caller")
    policy_document: dict[str, Any] = Field(
        description="The validated policy file (policies/access_request.yaml), as loaded"
    )
    reminder_before: timedelta = Field(
        default=timedelta(days=3), gt=timedelta(0), description="Before a time-bound expiry"
    )


class AccessRequestStatus(StrEnum):
    LOOKING_UP = "looking_up"
    AWAITING_APPROVAL = "awaiting_approval"
    PROVISIONING = "provisioning"
    ACTIVE = "active"  # time-bound access granted, waiting for its expiry
    EXTENSION_PENDING = "extension_pending"
    REVOKING = "revoking"
    COMPLETED = "completed"


class AccessRequestOutcome(StrEnum):
    GRANTED = "granted"  # pre-approved, end to end, no person involved
    GRANTED_AFTER_APPROVAL = "granted_after_approval"
    REVOKED_AT_EXPIRY = "revoked_at_expiry"  # time-bound access, revoked when it ran out
    REVOKED_TERMINATED = "revoked_terminated"  # the directory said the employee left
    WITHDRAWN_TERMINATED = "withdrawn_terminated"  # left before anything was granted
    REJECTED = "rejected"  # a person said no
    REJECTED_BY_POLICY = "rejected_by_policy"
    APPROVAL_EXPIRED = "approval_expired"
    NO_APPROVER = "no_approver"  # no manager on file who may decide: handed to a person
    UNKNOWN_EMPLOYEE = "unknown_employee"
    INACTIVE_EMPLOYEE = "inactive_employee"
    NOT_IN_CATALOGUE = "not_in_catalogue"
    DURATION_OVER_LIMIT = "duration_over_limit"
    DIRECTORY_UNAVAILABLE = "directory_unavailable"  # handed to a person


class ExtensionInput(BaseModel):
    """Update `request_extension`: more days of a time-bound access, approved again."""

    days: int = Field(ge=1, le=3650)
    justification: str = Field(min_length=1, max_length=1_000)


class ExtensionResult(BaseModel):
    request_id: str
    status: AccessRequestStatus
    expires_at: datetime | None


class EmployeeTerminatedInput(BaseModel):
    """Signal `employee_terminated`, from the directory: the employee left."""

    user_name: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="terminated in the directory", max_length=200)


class AccessRequestState(CaseState):
    """The `get_state` query; `approval` is the pending (or last) approval of the case."""

    employee_name: str
    application: str
    access_level: str
    employee: EmployeeInfo | None = None
    application_title: str | None = None
    app_owner: str | None = None
    entitlement: Entitlement | None = None
    catalogue_version: str | None = None
    catalogue_digest: str | None = None
    policy_version: str | None = None
    policy_rule: str | None = None
    explanation: str | None = None
    pre_approved: bool = False
    sensitive: bool = False
    manager: str | None = None
    ticket_id: str | None = None
    granted: bool = Field(default=False, description="This case added the membership")
    already_member: bool = False
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    reminders_sent: int = 0
    extensions: list[str] = Field(
        default_factory=list, description="Extension requests: '<request id>: <outcome>'"
    )
    revoked_at: datetime | None = None
    reason: str | None = None


class AccessRequestResult(BaseModel):
    case_id: str
    outcome: AccessRequestOutcome
    automated: bool = Field(description="Granted with no person involved")
    granted: bool
    group: str | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    extensions: int = 0
    catalogue_digest: str | None = None
    policy_version: str | None = None
    reason: str
