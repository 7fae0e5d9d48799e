"""Payload types of the access activities (`activities/access.py`): the entitlement catalogue's
entries and the grants of group membership in the directory.

Pure pydantic that imports nothing of Podium's: safe under the sandbox's passthrough, read by
the activities, the `access_request` process, the starter and tests.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AccessApproval",
    "Application",
    "Catalogue",
    "EmployeeGrant",
    "Entitlement",
    "GrantAccessInput",
    "GrantAccessResult",
    "GrantState",
    "ListAccessReviewsInput",
    "ListAccessReviewsResult",
    "ListEmployeeGrantsInput",
    "ListEmployeeGrantsResult",
    "LookupEntitlementInput",
    "LookupEntitlementResult",
    "NotifyEmployeeInput",
    "NotifyEmployeeResult",
    "PreApproved",
    "ReviewItem",
    "RevokeAccessInput",
    "RevokeAccessResult",
    "RevokeGrantInput",
    "RevokeGrantResult",
    "RevokeMembershipInput",
    "RevokeMembershipResult",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AccessApproval(StrEnum):
    """Who must agree before an entitlement is granted (the catalogue says, per level)."""

    MANAGER = "manager"  # the employee's manager, unless pre-approved for them
    SENSITIVE = "sensitive"  # the manager, then the app owner (or security); never pre-approved


class PreApproved(_Strict):
    """Whom an entitlement is pre-approved for: a directory department or role (title)."""

    departments: list[str] = Field(default_factory=list)
    titles: list[str] = Field(default_factory=list)


class Entitlement(_Strict):
    """One access level of an application: the directory group that grants it."""

    level: str = Field(min_length=1, max_length=64)
    group: str = Field(min_length=1, max_length=128, description="SCIM group displayName")
    approval: AccessApproval = AccessApproval.MANAGER
    pre_approved: PreApproved = Field(default_factory=PreApproved)
    max_days: int | None = Field(
        default=None, ge=1, le=3650, description="Access is time-bound, at most this long"
    )

    @model_validator(mode="after")
    def _sensitive_is_never_pre_approved(self) -> Self:
        if self.approval == AccessApproval.SENSITIVE and (
            self.pre_approved.departments or self.pre_approved.titles
        ):
            raise ValueError(f"level '{self.level}': sensitive access is never pre-approved")
        return self


class Application(_Strict):
    title: str = Field(min_length=1, max_length=128)
    owner: str = Field(min_length=1, max_length=128, description="The app owner's user name")
    levels: dict[str, Entitlement] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _levels_know_their_names(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("levels"), dict):
            data = {
                **data,
                "levels": {
                    name: {"level": name, **spec} if isinstance(spec, dict) else spec
                    for name, spec in data["levels"].items()
                },
            }
        return data


class Catalogue(_Strict):
    """The entitlement catalogue (`catalogues/access.yaml`). `digest` is the short sha256 of
    the file's bytes, stamped on every case looked up in it (set by the loader)."""

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)
    applications: dict[str, Application] = Field(min_length=1)


class LookupEntitlementInput(BaseModel):
    application: str = Field(min_length=1, max_length=64)
    level: str = Field(min_length=1, max_length=64)


class LookupEntitlementResult(BaseModel):
    application_title: str | None = None
    owner: str | None = None
    entitlement: Entitlement | None = Field(default=None, description="None: not catalogued")
    catalogue_version: str
    catalogue_digest: str
    reason: str = ""


class GrantAccessInput(BaseModel):
    idempotency_key: str = Field(description="One grant per key, also under retries")
    case_id: str
    user_id: str
    group: str


class GrantAccessResult(BaseModel):
    group_id: str
    granted: bool = Field(description="This case added the membership (it revokes only that)")
    already_member: bool
    granted_at: datetime


class RevokeAccessInput(BaseModel):
    grant_key: str = Field(description="The idempotency key of the grant to revoke")
    case_id: str
    reason: str = Field(max_length=200)


class RevokeAccessResult(BaseModel):
    revoked: bool = Field(description="This call removed the membership the grant added")
    revoked_at: datetime | None = None


class NotifyEmployeeInput(BaseModel):
    idempotency_key: str
    case_id: str
    user_id: str
    kind: str = Field(pattern=r"^access_[a-z_]{1,40}$", examples=["access_granted"])
    text: str = Field(max_length=2_000)


class NotifyEmployeeResult(BaseModel):
    message_id: str
    sent_to: str = Field(description="The masked address on file")
    created: bool


# --- access reviews (the `access_review` process) ------------------------------------------------


class ListAccessReviewsInput(BaseModel):
    """Which catalogue levels are reviewed: those whose `approval` is one of these."""

    approvals: list[AccessApproval] = Field(
        default_factory=lambda: [AccessApproval.SENSITIVE], min_length=1
    )


class ReviewItem(BaseModel):
    """One membership to review: a person holding a reviewed access level, and who reviews it
    (their manager by name from the directory; without one, the application's owner)."""

    user_id: str = Field(description="The directory's id of the member (SCIM `id`)")
    user_name: str
    title: str | None = None
    department: str | None = None
    manager: str | None = Field(default=None, description="The member's manager's user name")
    application: str
    application_title: str
    access_level: str
    group: str
    group_id: str
    owner: str = Field(description="The application's owner (the catalogue's)")


class ListAccessReviewsResult(BaseModel):
    catalogue_version: str
    catalogue_digest: str
    groups: list[str] = Field(description="The directory groups reviewed")
    items: list[ReviewItem] = Field(default_factory=list)
    managers: list[str] = Field(
        default_factory=list, description="Every manager in the directory (user names)"
    )
    missing_groups: list[str] = Field(
        default_factory=list, description="Reviewed groups the directory does not have"
    )


class RevokeMembershipInput(BaseModel):
    idempotency_key: str = Field(description="One removal per key, also under retries")
    case_id: str
    user_id: str
    group_id: str
    group: str
    reason: str = Field(max_length=200)


class RevokeMembershipResult(BaseModel):
    removed: bool = Field(description="This call removed the membership (False: already gone)")
    revoked_at: datetime


# --- a terminated employee (the `access_termination` process) -----------------------------------


class ListEmployeeGrantsInput(BaseModel):
    user_name: str = Field(min_length=1, max_length=128, description="The directory's user name")


class EmployeeGrant(BaseModel):
    """A grant of group membership Podium recorded for the employee (`grant_access`)."""

    grant_key: str = Field(description="The grant's idempotency key")
    case_id: str = Field(description="The access request that granted it")
    group: str
    status: str = Field(description="pending | granted | revoked | gone")
    was_member: bool = Field(description="A member before the grant: Podium added nothing")
    revoked_by: str | None = Field(default=None, description="The case that revokes it")

    @property
    def held(self) -> bool:
        """Podium added it and nothing has revoked it (it may still be in the directory)."""
        return self.status == "granted" and not self.was_member and self.revoked_by is None


class ListEmployeeGrantsResult(BaseModel):
    user_id: str | None = Field(default=None, description="None: not in the directory")
    grants: list[EmployeeGrant] = Field(default_factory=list)


class GrantState(StrEnum):
    """What a termination's revocation of one grant found."""

    REMOVED = "removed"  # this revocation removed the membership (one SCIM write)
    ALREADY_GONE = "already_gone"  # no longer a member (removed elsewhere): nothing written
    REVOKED_ELSEWHERE = "revoked_elsewhere"  # its own case revokes (or revoked) it
    HAD_IT_BEFORE = "had_it_before"  # Podium added nothing: never revoked
    UNKNOWN_GRANT = "unknown_grant"


class RevokeGrantInput(BaseModel):
    grant_key: str = Field(description="The idempotency key of the grant to revoke")
    case_id: str = Field(description="The revoking case: it holds the revocation")
    reason: str = Field(max_length=200)


class RevokeGrantResult(BaseModel):
    state: GrantState
    revoked_by: str | None = None
    revoked_at: datetime | None = None
