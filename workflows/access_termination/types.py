"""Input, state and result of the `access_termination` process.

Pure pydantic: safe to import from the workflow (under passthrough), the starter and tests.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from workflows.contracts.access import GrantState
from workflows.contracts.case import CaseState

__all__ = [
    "AccessTerminationInput",
    "AccessTerminationOutcome",
    "AccessTerminationResult",
    "AccessTerminationState",
    "AccessTerminationStatus",
    "RevokedGrant",
]


class AccessTerminationInput(BaseModel):
    employee: str = Field(min_length=1, max_length=128, description="The directory's user name")
    reason: str = Field(default="terminated in the directory", max_length=200)
    requested_by: str = Field(min_length=1, max_length=128, description="The verified caller")


class AccessTerminationStatus(StrEnum):
    LISTING = "listing"
    REVOKING = "revoking"
    COMPLETED = "completed"


class AccessTerminationOutcome(StrEnum):
    REVOKED = "revoked"  # at least one membership removed
    NOTHING_HELD = "nothing_held"  # every grant was already revoked or gone
    UNKNOWN_EMPLOYEE = "unknown_employee"  # the directory does not know the user name
    INCOMPLETE = "incomplete"  # a grant could not be revoked: handed to a person
    DIRECTORY_UNAVAILABLE = "directory_unavailable"


class RevokedGrant(BaseModel):
    """One grant the termination looked at, and what became of it."""

    case_id: str = Field(description="The access request that granted it")
    group: str
    state: GrantState | None = Field(default=None, description="None: not revoked (see reason)")
    revoked_by: str | None = None
    reason: str | None = None


class AccessTerminationState(CaseState):
    employee: str
    grants: list[RevokedGrant] = Field(default_factory=list)
    reason: str | None = None


class AccessTerminationResult(BaseModel):
    case_id: str
    outcome: AccessTerminationOutcome
    removed: int = Field(default=0, description="Memberships removed (one SCIM write each)")
    grants: list[RevokedGrant] = Field(default_factory=list)
    finished_at: datetime | None = None
    reason: str = ""
