"""Activities of access management: the entitlement catalogue, group membership grants in the
SCIM directory and notices to the employee.

The catalogue (`catalogues/access.yaml`, or the file `PODIUM_ACCESS_CATALOGUE` names) is a
versioned data file: which applications and access levels exist, the directory group of each,
whom a level is pre-approved for and which are sensitive. Its version is the short sha256 of
its bytes; a lookup answers with it, so every case records the catalogue it was decided under.

A grant is one group membership in the directory, once per idempotency key, also under retries:
the grant is recorded (`access_grants`) with whether the employee was a member already before
anything is written, membership is checked again before it is added, and a retry reads the
record. So a grant writes to the directory exactly once (one PATCH), a retry after a lost
answer writes nothing, and a revocation removes only what a grant added (never a membership
the employee had before the case).

A grant is revoked by one case only: its own access request (`revoke_access`: expiry,
termination) or the termination of the employee (`revoke_grant`, the `access_termination`
process, which finds the grants with `list_employee_grants`). The first to claim the grant's
record (`revoked_by`, one conditional UPDATE) removes the membership; the other writes nothing.
The removal checks membership first, so a membership already gone (an access review, an
administrator) is never written to either.

Access reviews (the `access_review` process) list the members of the reviewed levels' groups
with their managers (`list_access_reviews`) and remove a membership a reviewer revoked
(`revoke_membership`): recorded first under its idempotency key with whether the person was a
member, so a removal is at most one SCIM write (one PATCH), a retry after a lost answer writes
nothing, and a membership already gone is written to not at all.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.identity import ENTERPRISE_USER, ScimDirectory, mask_email, primary_email
from core.db import Message, add_missing_columns
from workflows.contracts.access import (
    Catalogue,
    EmployeeGrant,
    GrantAccessInput,
    GrantAccessResult,
    GrantState,
    ListAccessReviewsInput,
    ListAccessReviewsResult,
    ListEmployeeGrantsInput,
    ListEmployeeGrantsResult,
    LookupEntitlementInput,
    LookupEntitlementResult,
    NotifyEmployeeInput,
    NotifyEmployeeResult,
    ReviewItem,
    RevokeAccessInput,
    RevokeAccessResult,
    RevokeGrantInput,
    RevokeGrantResult,
    RevokeMembershipInput,
    RevokeMembershipResult,
)

__all__ = [
    "DEFAULT_CATALOGUE",
    "AccessActivities",
    "AccessGrant",
    "AccessRevocation",
    "AccessSettings",
    "CatalogueError",
    "load_catalogue",
    "parse_catalogue",
]

log = structlog.get_logger()

DEFAULT_CATALOGUE = Path(__file__).resolve().parent.parent / "catalogues" / "access.yaml"
DIGEST_LENGTH = 12


class AccessSettings(BaseSettings):
    """`PODIUM_ACCESS_CATALOGUE`: the entitlement catalogue file (default: the repository's)."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_ACCESS_", extra="ignore")

    catalogue: Path = DEFAULT_CATALOGUE


class CatalogueError(ValueError):
    """A catalogue file that does not load."""


def parse_catalogue(content: bytes, *, source: str = "<catalogue>") -> Catalogue:
    try:
        raw = yaml.safe_load(content)
    except yaml.YAMLError as err:
        raise CatalogueError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise CatalogueError(f"{source}: the file must be a mapping (version, applications)")
    raw.pop("digest", None)  # never the file's to set
    digest = hashlib.sha256(content).hexdigest()[:DIGEST_LENGTH]
    try:
        return Catalogue.model_validate({**raw, "digest": digest})
    except ValidationError as err:
        lines = [
            f"{source}: {'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in err.errors()
        ]
        raise CatalogueError("\n".join(lines)) from None


def load_catalogue(path: Path) -> Catalogue:
    try:
        content = path.read_bytes()
    except OSError as err:
        raise CatalogueError(f"{path}: cannot read: {err.strerror or err}") from None
    return parse_catalogue(content, source=str(path))


def _manager_id(user: dict[str, Any]) -> str | None:
    """The SCIM id of the user's manager (enterprise extension), if the directory has one."""
    enterprise = user.get(ENTERPRISE_USER) or {}
    manager = enterprise.get("manager") or {}
    value = manager.get("value") if isinstance(manager, dict) else None
    return str(value) if value else None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class AccessGrant(SQLModel, table=True):
    """A grant of group membership, under its idempotency key: recorded before the directory is
    written, with whether the employee was a member already (then nothing is added or ever
    revoked)."""

    __tablename__ = "access_grants"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    case_id: str = Field(index=True, max_length=200)
    user_id: str = Field(max_length=200)
    group_id: str = Field(max_length=200)
    group_name: str = Field(max_length=128)
    was_member: bool
    # pending | granted | revoked | gone (already removed elsewhere when revoked: no write)
    status: str = Field(default="pending", max_length=16)
    granted_at: datetime | None = None
    revoked_at: datetime | None = None
    # The case that revokes it (its own, or the employee's termination): claimed before writing.
    revoked_by: str | None = Field(default=None, max_length=200)


class AccessRevocation(SQLModel, table=True):
    """A membership an access review removes, under its idempotency key: recorded before the
    directory is written, with whether the person was a member then (if not, nothing is
    written)."""

    __tablename__ = "access_review_revocations"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    case_id: str = Field(index=True, max_length=200)
    user_id: str = Field(max_length=200)
    group_id: str = Field(max_length=200)
    group_name: str = Field(max_length=128)
    was_member: bool
    status: str = Field(default="pending", max_length=16)  # pending | revoked
    revoked_at: datetime | None = None


_REVOKED = ("revoked", "gone")

_TABLES = [
    SQLModel.metadata.tables[str(AccessGrant.__tablename__)],
    SQLModel.metadata.tables[str(AccessRevocation.__tablename__)],
]


class AccessActivities:
    def __init__(self, directory: ScimDirectory, engine: Engine, catalogue: Path) -> None:
        self._directory = directory
        self._engine = engine
        self._catalogue_path = catalogue
        SQLModel.metadata.create_all(engine, tables=_TABLES)
        add_missing_columns(engine, _TABLES[0])  # `revoked_by` on a database from before it

    @classmethod
    def from_env(cls, directory: ScimDirectory, engine: Engine) -> AccessActivities:
        return cls(directory, engine, AccessSettings().catalogue)

    @property
    def directory(self) -> ScimDirectory:
        return self._directory

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.lookup_entitlement,
            self.grant_access,
            self.revoke_access,
            self.notify_employee,
            self.list_access_reviews,
            self.revoke_membership,
            self.list_employee_grants,
            self.revoke_grant,
        ]

    @activity.defn(name="lookup_entitlement")
    def lookup_entitlement(self, input: LookupEntitlementInput) -> LookupEntitlementResult:
        """The catalogue's entry for an application's access level (read at every call: an
        edited catalogue applies to the next case, never to one already looked up)."""
        try:
            catalogue = load_catalogue(self._catalogue_path)
        except CatalogueError as err:
            raise ApplicationError(str(err), type="InvalidCatalogue", non_retryable=True) from None
        versions = {
            "catalogue_version": catalogue.version,
            "catalogue_digest": catalogue.digest,
        }
        app = catalogue.applications.get(input.application.strip().casefold())
        if app is None:
            known = ", ".join(sorted(catalogue.applications))
            return LookupEntitlementResult(
                reason=f"no application '{input.application}' in the catalogue (known: {known})",
                **versions,
            )
        entitlement = app.levels.get(input.level.strip().casefold())
        if entitlement is None:
            known = ", ".join(sorted(app.levels))
            return LookupEntitlementResult(
                application_title=app.title,
                owner=app.owner,
                reason=f"{app.title} has no access level '{input.level}' (known: {known})",
                **versions,
            )
        return LookupEntitlementResult(
            application_title=app.title, owner=app.owner, entitlement=entitlement, **versions
        )

    @activity.defn(name="grant_access")
    async def grant_access(self, input: GrantAccessInput) -> GrantAccessResult:
        """Add the employee to the entitlement's group: once per idempotency key."""
        row = await asyncio.to_thread(self._grant, input.idempotency_key)
        if row is None:
            group_id = await self._group(input.group)
            member = await self._directory.is_member(group_id, input.user_id)
            row = await asyncio.to_thread(self._record_intent, input, group_id, member)
        if row.status == "pending":
            if not row.was_member:
                # Checked again inside: after a lost answer the retry finds the membership.
                await self._directory.add_member(row.group_id, input.user_id)
            row = await asyncio.to_thread(self._mark, input.idempotency_key, "granted")
        log.info(
            "access_granted",
            case_id=input.case_id,
            group=row.group_name,
            already_member=row.was_member,
        )
        return GrantAccessResult(
            group_id=row.group_id,
            granted=not row.was_member,
            already_member=row.was_member,
            granted_at=_aware(row.granted_at or _utcnow()),
        )

    @activity.defn(name="revoke_access")
    async def revoke_access(self, input: RevokeAccessInput) -> RevokeAccessResult:
        """Remove the membership a grant added (nothing when the employee had it before)."""
        row = await asyncio.to_thread(self._grant, input.grant_key)
        if row is None or row.was_member:
            return RevokeAccessResult(revoked=False)
        if row.status in _REVOKED:
            return RevokeAccessResult(revoked=True, revoked_at=_aware(row.revoked_at or _utcnow()))
        row = await asyncio.to_thread(self._claim, input.grant_key, input.case_id)
        if row.revoked_by != input.case_id:
            # The employee's termination holds it: it removes the membership, not this case.
            log.info("access_revoked_elsewhere", case_id=input.case_id, by=row.revoked_by)
            return RevokeAccessResult(revoked=True, revoked_at=_aware(row.revoked_at or _utcnow()))
        await self._directory.remove_member(row.group_id, row.user_id)
        row = await asyncio.to_thread(self._mark, input.grant_key, "revoked")
        log.info("access_revoked", case_id=input.case_id, group=row.group_name, why=input.reason)
        return RevokeAccessResult(revoked=True, revoked_at=_aware(row.revoked_at or _utcnow()))

    @activity.defn(name="notify_employee")
    async def notify_employee(self, input: NotifyEmployeeInput) -> NotifyEmployeeResult:
        """A notice to the employee's address on file (the directory's), once per key."""
        sent = await asyncio.to_thread(self._sent, input.idempotency_key)
        if sent is not None:
            return sent
        user = await self._directory.get_user(input.user_id)
        address = primary_email(user) if user else None
        if address is None:
            raise ApplicationError(
                f"user {input.user_id} has no email address on file",
                type="NoAddressOnFile",
                non_retryable=True,
            )
        return await asyncio.to_thread(self._send, input, address)

    @activity.defn(name="list_access_reviews")
    async def list_access_reviews(self, input: ListAccessReviewsInput) -> ListAccessReviewsResult:
        """Who holds the reviewed access levels (per the catalogue's `approval`), read from the
        directory's groups, each with their manager; and every manager in the directory."""
        try:
            catalogue = load_catalogue(self._catalogue_path)
        except CatalogueError as err:
            raise ApplicationError(str(err), type="InvalidCatalogue", non_retryable=True) from None
        directory = self._directory
        users = {str(user["id"]): user for user in await directory.users()}
        manager_ids = {uid: _manager_id(user) for uid, user in users.items()}
        managers = sorted(
            {str(users[m]["userName"]) for m in manager_ids.values() if m and m in users}
        )
        reviewed = set(input.approvals)
        items: list[ReviewItem] = []
        groups: list[str] = []
        missing: list[str] = []
        for app_name, app in sorted(catalogue.applications.items()):
            for level_name, entitlement in sorted(app.levels.items()):
                if entitlement.approval not in reviewed:
                    continue
                groups.append(entitlement.group)
                group_id = await directory.group_id(entitlement.group)
                if group_id is None:
                    missing.append(entitlement.group)
                    continue
                for user_id in await directory.group_members(group_id):
                    user = users.get(user_id) or await directory.get_user(user_id)
                    if user is None:
                        continue
                    manager_id = _manager_id(user)
                    manager = users.get(manager_id or "") if manager_id else None
                    enterprise = user.get(ENTERPRISE_USER) or {}
                    items.append(
                        ReviewItem(
                            user_id=user_id,
                            user_name=str(user["userName"]),
                            title=user.get("title"),
                            department=enterprise.get("department"),
                            manager=str(manager["userName"]) if manager else None,
                            application=app_name,
                            application_title=app.title,
                            access_level=level_name,
                            group=entitlement.group,
                            group_id=group_id,
                            owner=app.owner,
                        )
                    )
        items.sort(key=lambda i: (i.manager or i.owner, i.user_name, i.group))
        log.info("access_reviews_listed", groups=len(groups), items=len(items))
        return ListAccessReviewsResult(
            catalogue_version=catalogue.version,
            catalogue_digest=catalogue.digest,
            groups=groups,
            items=items,
            managers=managers,
            missing_groups=missing,
        )

    @activity.defn(name="revoke_membership")
    async def revoke_membership(self, input: RevokeMembershipInput) -> RevokeMembershipResult:
        """Remove a reviewed membership: once per idempotency key, at most one SCIM write."""
        row = await asyncio.to_thread(self._revocation, input.idempotency_key)
        if row is None:
            member = await self._directory.is_member(input.group_id, input.user_id)
            row = await asyncio.to_thread(self._record_revocation, input, member)
        if row.status == "pending":
            if row.was_member:
                # Checked again inside: after a lost answer the retry finds it gone.
                await self._directory.remove_member(row.group_id, row.user_id)
            row = await asyncio.to_thread(self._revoked, input.idempotency_key)
        log.info(
            "membership_revoked",
            case_id=input.case_id,
            group=row.group_name,
            removed=row.was_member,
        )
        return RevokeMembershipResult(
            removed=row.was_member, revoked_at=_aware(row.revoked_at or _utcnow())
        )

    @activity.defn(name="list_employee_grants")
    async def list_employee_grants(
        self, input: ListEmployeeGrantsInput
    ) -> ListEmployeeGrantsResult:
        """Every grant Podium recorded for the employee (found by their directory id, also
        when the directory has deactivated them), oldest first."""
        user = await self._directory.find_user(input.user_name)
        if user is None:
            return ListEmployeeGrantsResult()
        user_id = str(user["id"])
        rows = await asyncio.to_thread(self._grants_of, user_id)
        grants = [
            EmployeeGrant(
                grant_key=row.idempotency_key,
                case_id=row.case_id,
                group=row.group_name,
                status=row.status,
                was_member=row.was_member,
                revoked_by=row.revoked_by,
            )
            for row in rows
        ]
        log.info("employee_grants_listed", grants=len(grants), held=sum(g.held for g in grants))
        return ListEmployeeGrantsResult(user_id=user_id, grants=grants)

    @activity.defn(name="revoke_grant")
    async def revoke_grant(self, input: RevokeGrantInput) -> RevokeGrantResult:
        """Revoke one grant for `input.case_id` (a termination): claim its record, then remove
        the membership if the employee still holds it. At most one SCIM write per grant, also
        under retries and when the grant's own case revokes it at the same time."""
        row = await asyncio.to_thread(self._grant, input.grant_key)
        if row is None:
            return RevokeGrantResult(state=GrantState.UNKNOWN_GRANT)
        if row.was_member:
            return RevokeGrantResult(state=GrantState.HAD_IT_BEFORE)
        if row.status == "pending":
            # Not yet confirmed by its case's grant: that case gets the termination signal.
            raise ApplicationError(
                f"grant {input.grant_key} is still being written", type="GrantInFlight"
            )
        if row.revoked_by is None and row.status not in _REVOKED:
            row = await asyncio.to_thread(self._claim, input.grant_key, input.case_id)
        if row.revoked_by != input.case_id:
            return RevokeGrantResult(
                state=GrantState.REVOKED_ELSEWHERE,
                revoked_by=row.revoked_by or row.case_id,
                revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
            )
        if row.status not in _REVOKED:
            # Checked first inside: a membership already gone is not written to.
            removed = await self._directory.remove_member(row.group_id, row.user_id)
            row = await asyncio.to_thread(
                self._mark, input.grant_key, "revoked" if removed else "gone"
            )
        state = GrantState.REMOVED if row.status == "revoked" else GrantState.ALREADY_GONE
        log.info("grant_revoked", case_id=input.case_id, group=row.group_name, state=state.value)
        return RevokeGrantResult(
            state=state, revoked_by=input.case_id, revoked_at=_aware(row.revoked_at or _utcnow())
        )

    # --- helpers --------------------------------------------------------------------------------

    def _grants_of(self, user_id: str) -> list[AccessGrant]:
        with Session(self._engine) as session:
            query = (
                select(AccessGrant)
                .where(AccessGrant.user_id == user_id)
                .order_by(col(AccessGrant.granted_at), col(AccessGrant.idempotency_key))
            )
            return list(session.exec(query))

    def _claim(self, key: str, holder: str) -> AccessGrant:
        """Make `holder` the grant's revoker unless another case already is (atomic)."""
        with Session(self._engine) as session:
            session.execute(
                update(AccessGrant)
                .where(
                    col(AccessGrant.idempotency_key) == key,
                    col(AccessGrant.revoked_by).is_(None),
                )
                .values(revoked_by=holder)
            )
            session.commit()
            row = session.get(AccessGrant, key)
            assert row is not None
            return row

    async def _group(self, name: str) -> str:
        group_id = await self._directory.group_id(name)
        if group_id is None:
            raise ApplicationError(
                f"the directory has no group '{name}'", type="UnknownGroup", non_retryable=True
            )
        return group_id

    def _grant(self, key: str) -> AccessGrant | None:
        with Session(self._engine) as session:
            return session.get(AccessGrant, key)

    def _record_intent(self, input: GrantAccessInput, group_id: str, member: bool) -> AccessGrant:
        with Session(self._engine) as session:
            row = AccessGrant(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                user_id=input.user_id,
                group_id=group_id,
                group_name=input.group,
                was_member=member,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                # A concurrent attempt recorded it first: its record stands.
                session.rollback()
                found = session.get(AccessGrant, input.idempotency_key)
                if found is None:
                    raise
                return found
            session.refresh(row)
            return row

    def _mark(self, key: str, status: str) -> AccessGrant:
        with Session(self._engine) as session:
            row = session.get(AccessGrant, key)
            assert row is not None
            row.status = status
            if status == "granted":
                row.granted_at = _utcnow()
            else:
                row.revoked_at = _utcnow()
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def _revocation(self, key: str) -> AccessRevocation | None:
        with Session(self._engine) as session:
            return session.get(AccessRevocation, key)

    def _record_revocation(self, input: RevokeMembershipInput, member: bool) -> AccessRevocation:
        with Session(self._engine) as session:
            row = AccessRevocation(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                user_id=input.user_id,
                group_id=input.group_id,
                group_name=input.group,
                was_member=member,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                found = session.get(AccessRevocation, input.idempotency_key)
                if found is None:
                    raise
                return found
            session.refresh(row)
            return row

    def _revoked(self, key: str) -> AccessRevocation:
        with Session(self._engine) as session:
            row = session.get(AccessRevocation, key)
            assert row is not None
            row.status = "revoked"
            row.revoked_at = _utcnow()
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def _sent(self, key: str) -> NotifyEmployeeResult | None:
        with Session(self._engine) as session:
            row = session.exec(select(Message).where(Message.idempotency_key == key)).first()
            if row is None:
                return None
            return NotifyEmployeeResult(
                message_id=f"M-{row.id}", sent_to=mask_email(row.recipient) or "-", created=False
            )

    def _send(self, input: NotifyEmployeeInput, address: str) -> NotifyEmployeeResult:
        message = Message(
            idempotency_key=input.idempotency_key,
            case_id=input.case_id,
            kind=input.kind,
            channel="email",
            recipient=address,
            body=input.text,
        )
        with Session(self._engine) as session:
            session.add(message)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                found = self._sent(input.idempotency_key)
                if found is None:
                    raise
                return found
            session.refresh(message)
        return NotifyEmployeeResult(
            message_id=f"M-{message.id}", sent_to=mask_email(address) or "-", created=True
        )
