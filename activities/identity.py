"""Activities that talk to the identity system: the SCIM 2.0 directory, identity verification
codes and password resets.

The directory is any SCIM 2.0 service provider (RFC 7643/7644): the embedded one of
`podium up` (`starter/scim_server.py`) or a real one (Okta, Entra ID, ...) named by
`PODIUM_SCIM_URL` and `PODIUM_SCIM_TOKEN`. `ScimDirectory` holds one pooled `httpx.AsyncClient`
that never retries by itself: Temporal does. A transport error, 408, 429 or 5xx is a retryable
failure (after `Retry-After` when the directory says so); any other 4xx is non-retryable and
reported with the directory's own detail.

Secrets stay inside this module: a one-time code is drawn, stored as a salted HMAC and sent to
the address on file (the directory's primary email, never an address from a request) in one
transaction with its outbox message; an entry point stores what a person typed as an attempt
(`record_code_attempt`, the same salted HMAC) and the workflow names only the attempt id; a
temporary password is drawn, written to the directory and sent in the same way. Neither travels
in an activity's input or result, a log line or an audit record.

A code's text stays in the outbox only while the case waits for it: once the right code is
entered, the code expires or wrong codes lock the case, the email's body is replaced by a
notice that says so (`retire_verification_code`; the row stays, as a record of what was sent).

Every write is idempotent: a code is sent once per idempotency key, and a reset is done once per
idempotency key (`identity_password_resets` keeps the key, never the password), with one password
change in the directory even when a retry follows a write whose answer was lost
(`identity_password_writes` holds the write's password only until the reset is recorded).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import UniqueConstraint
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, func, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.notifications import retry_after
from activities.types import (
    CheckVerificationCodeInput,
    CheckVerificationCodeResult,
    EmployeeInfo,
    LookupEmployeeInput,
    LookupEmployeeResult,
    ResetPasswordInput,
    ResetPasswordResult,
    RetireVerificationCodeInput,
    RetireVerificationCodeResult,
    SendVerificationCodeInput,
    SendVerificationCodeResult,
)
from core.db import Message

__all__ = [
    "MAX_STORED_ATTEMPTS",
    "AttemptsExhausted",
    "IdentityActivities",
    "PasswordResetRecord",
    "PendingPasswordWrite",
    "ScimDirectory",
    "ScimSettings",
    "UnknownVerification",
    "VerificationAttempt",
    "VerificationCode",
    "create_identity_tables",
    "mask_email",
    "primary_email",
    "record_code_attempt",
]

log = structlog.get_logger()

ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SCIM_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
CODE_DIGITS = 6
# Attempts an entry point may store for one case. The case locks after its policy's wrong codes
# (at most 10); this bounds what callers can write even while the case is not listening.
MAX_STORED_ATTEMPTS = 20
PASSWORD_LENGTH = 16
_PASSWORD_ALPHABET = string.ascii_letters + string.digits + "-_.!@#"


class ScimSettings(BaseSettings):
    """Where the directory is: `PODIUM_SCIM_URL` (the SCIM base, e.g. `https://x/scim/v2`) and
    `PODIUM_SCIM_TOKEN` (a bearer token; never logged)."""

    model_config = SettingsConfigDict(env_prefix="PODIUM_SCIM_", extra="ignore")

    url: str = "http://127.0.0.1:8470/v2"
    token: str | None = None
    timeout_s: float = 10.0


# --- the directory --------------------------------------------------------------------------


class ScimDirectory:
    """A SCIM 2.0 client: users, their groups, password changes, group membership."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout = SCIM_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/scim+json", "User-Agent": "podium-identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            # Retries are Temporal's: the transport makes exactly one attempt.
            transport=transport or httpx.AsyncHTTPTransport(retries=0),
            follow_redirects=False,
            headers=headers,
        )
        self.writes = 0  # successful writes (POST, PATCH, PUT, DELETE) by this client

    @classmethod
    def from_settings(cls, settings: ScimSettings) -> ScimDirectory:
        return cls(
            settings.url,
            settings.token,
            timeout=httpx.Timeout(settings.timeout_s, connect=min(5.0, settings.timeout_s)),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        missing_ok: bool = False,
        echo: bool = True,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One request; `echo=False` keeps the directory's error detail out of the error (a
        detail may quote what was sent, such as a password)."""
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise ApplicationError(
                f"SCIM directory unreachable ({type(err).__name__})", type="ScimUnavailable"
            ) from None
        status = response.status_code
        if status < 300:
            if method != "GET":
                self.writes += 1
            return response
        if status == 404 and missing_ok:
            return None
        detail = _scim_detail(response) if echo else response.reason_phrase or "no detail"
        if status in (408, 429) or status >= 500:
            raise ApplicationError(
                f"SCIM directory answered {status} to {method} {path.split('?')[0]}: {detail}",
                type="ScimUnavailable",
                next_retry_delay=retry_after(response),
            )
        raise ApplicationError(
            f"SCIM directory refused {method} {path.split('?')[0]} with {status}: {detail}",
            type="ScimRejected",
            non_retryable=True,
        )

    async def find_user(self, user_name: str) -> dict[str, Any] | None:
        """The user whose `userName` is `user_name` (case-insensitive, as SCIM compares it)."""
        response = await self._call(
            "GET", "/Users", params={"filter": f"userName eq {_quoted(user_name)}"}
        )
        assert response is not None
        found = response.json().get("Resources") or []
        return found[0] if found else None

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/Users/{_segment(user_id)}", missing_ok=True)
        return response.json() if response is not None else None

    async def groups_of(self, user_id: str) -> list[str]:
        response = await self._call(
            "GET",
            "/Groups",
            params={"filter": f"members.value eq {_quoted(user_id)}", "attributes": "displayName"},
        )
        assert response is not None
        return sorted(str(g.get("displayName", "")) for g in response.json().get("Resources") or [])

    async def set_password(self, user_id: str, password: str) -> str | None:
        """Replace the user's password; the user's new version (ETag), if the directory says."""
        response = await self._call(
            "PATCH",
            f"/Users/{_segment(user_id)}",
            echo=False,
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "path": "password", "value": password}],
            },
        )
        assert response is not None
        etag = response.headers.get("ETag")
        return str(etag) if etag else None

    async def add_member(self, group_id: str, user_id: str) -> bool:
        """Add the user to the group unless they are in it already (checked first, so a retry
        never adds twice): True when this call added them."""
        response = await self._call(
            "GET",
            "/Groups",
            params={
                "filter": f"id eq {_quoted(group_id)} and members.value eq {_quoted(user_id)}",
                "attributes": "id",
            },
        )
        assert response is not None
        if response.json().get("totalResults", 0):
            return False
        await self._call(
            "PATCH",
            f"/Groups/{_segment(group_id)}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": user_id}]}],
            },
        )
        return True

    # --- group membership by name (the access_request process) ------------------------------

    async def group_id(self, display_name: str) -> str | None:
        """The id of the group whose `displayName` is `display_name`, if there is one."""
        response = await self._call(
            "GET",
            "/Groups",
            params={"filter": f"displayName eq {_quoted(display_name)}", "attributes": "id"},
        )
        assert response is not None
        found = response.json().get("Resources") or []
        return str(found[0]["id"]) if found else None

    async def is_member(self, group_id: str, user_id: str) -> bool:
        response = await self._call(
            "GET",
            "/Groups",
            params={
                "filter": f"id eq {_quoted(group_id)} and members.value eq {_quoted(user_id)}",
                "attributes": "id",
            },
        )
        assert response is not None
        return bool(response.json().get("totalResults", 0))

    async def remove_member(self, group_id: str, user_id: str) -> bool:
        """Remove the user from the group if they are in it (checked first, so a retry never
        writes twice): True when this call removed them."""
        if not await self.is_member(group_id, user_id):
            return False
        await self._call(
            "PATCH",
            f"/Groups/{_segment(group_id)}",
            json={
                "schemas": [PATCH_OP],
                "Operations": [{"op": "remove", "path": f"members[value eq {_quoted(user_id)}]"}],
            },
        )
        return True

    # --- listing (the access_review process) -------------------------------------------------

    async def group_members(self, group_id: str) -> list[str]:
        """The SCIM ids of the group's members (none when the group is gone)."""
        response = await self._call("GET", f"/Groups/{_segment(group_id)}", missing_ok=True)
        if response is None:
            return []
        members = response.json().get("members") or []
        return [str(m["value"]) for m in members if isinstance(m, dict) and m.get("value")]

    async def users(self, *, page: int = 100) -> list[dict[str, Any]]:
        """Every user of the directory, page by page (RFC 7644 §3.4.2.4)."""
        found: list[dict[str, Any]] = []
        start = 1
        while True:
            response = await self._call(
                "GET", "/Users", params={"startIndex": start, "count": page}
            )
            assert response is not None
            body = response.json()
            resources = body.get("Resources") or []
            found.extend(resources)
            if not resources or len(found) >= int(body.get("totalResults", len(found))):
                return found
            start += len(resources)


def _quoted(value: str) -> str:
    """A SCIM filter string literal (RFC 7644 §3.4.2.2: JSON string rules)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _segment(value: str) -> str:
    if not value or "/" in value or "?" in value or "#" in value:
        raise ApplicationError(f"not a SCIM id: {value!r}", type="InvalidId", non_retryable=True)
    return value


def _scim_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "no detail"
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("scimType") or response.reason_phrase)[:300]
    return response.reason_phrase or "no detail"


def mask_email(address: str | None) -> str | None:
    """`ana.lima@example.com` -> `a***@example.com`: enough for a person to recognise it."""
    if not address or "@" not in address:
        return None
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def primary_email(user: dict[str, Any]) -> str | None:
    """The address on file: the primary email, else the work one, else the first."""
    return _primary_email(user)


def _version_of(user: dict[str, Any]) -> str | None:
    """The user's version (`meta.version`, its ETag), when the directory keeps one."""
    meta = user.get("meta")
    version = meta.get("version") if isinstance(meta, dict) else None
    return str(version) if version else None


def _primary_email(user: dict[str, Any]) -> str | None:
    emails = [e for e in user.get("emails") or [] if isinstance(e, dict) and e.get("value")]
    primary = next((e for e in emails if e.get("primary")), None)
    chosen = primary or next((e for e in emails if e.get("type") == "work"), None)
    chosen = chosen or (emails[0] if emails else None)
    return str(chosen["value"]) if chosen else None


# --- the verification store (outside history) -----------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything stored here is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class VerificationCode(SQLModel, table=True):
    """The one-time code of a case: its salted HMAC, never the code."""

    __tablename__ = "identity_verification_codes"
    __table_args__ = (UniqueConstraint("idempotency_key", name="uq_identity_codes_key"),)

    case_id: str = Field(primary_key=True, max_length=200)
    idempotency_key: str = Field(max_length=200)
    user_id: str = Field(max_length=200)
    salt: str = Field(max_length=64)
    digest: str = Field(max_length=64)
    expires_at: datetime
    used_at: datetime | None = None
    message_id: int | None = None
    sent_to: str = Field(max_length=320)
    created_at: datetime = Field(default_factory=_utcnow)


class VerificationAttempt(SQLModel, table=True):
    """A code a person entered, as the same salted HMAC; checked once."""

    __tablename__ = "identity_verification_attempts"

    attempt_id: str = Field(primary_key=True, max_length=64)
    case_id: str = Field(index=True, max_length=200)
    digest: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=_utcnow)
    result: str | None = Field(default=None, max_length=32)


class PasswordResetRecord(SQLModel, table=True):
    """That a reset was done, under its idempotency key: never the password."""

    __tablename__ = "identity_password_resets"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    case_id: str = Field(index=True, max_length=200)
    user_id: str = Field(max_length=200)
    reset_at: datetime = Field(default_factory=_utcnow)
    delivered_to: str = Field(max_length=320)
    scim_version: str | None = Field(default=None, max_length=128)


class PendingPasswordWrite(SQLModel, table=True):
    """A password write begun and not yet recorded: the user's version in the directory before
    it, and the temporary password it writes. A retry whose first answer was lost finds the
    user changed since, and records this password instead of writing a second one. The row
    lives only until the reset is recorded (its email then holds the password)."""

    __tablename__ = "identity_password_writes"

    idempotency_key: str = Field(primary_key=True, max_length=200)
    case_id: str = Field(index=True, max_length=200)
    user_id: str = Field(max_length=200)
    version_before: str | None = Field(default=None, max_length=128)
    password: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=_utcnow)


_TABLES = [
    SQLModel.metadata.tables[str(model.__tablename__)]
    for model in (VerificationCode, VerificationAttempt, PasswordResetRecord, PendingPasswordWrite)
]


class UnknownVerification(LookupError):
    """No code was sent for this case (or it is not waiting for one)."""


class AttemptsExhausted(LookupError):
    """The case already has `MAX_STORED_ATTEMPTS` stored attempts: no more are taken."""


def create_identity_tables(engine: Engine) -> None:
    """The verification store's tables (an entry point may store an attempt before a worker
    that creates them has run against this database)."""
    SQLModel.metadata.create_all(engine, tables=_TABLES)


# What stays of a verification email in the outbox once its code is used, expired or locked out:
# that it was sent (when, to whom), never the code.
RETIRED_CODE_BODY = (
    "Your Podium verification code was sent here; it has been removed ({reason}). If you did "
    "not ask for a password reset, tell the IT service desk."
)
_RETIRED_PREFIX = RETIRED_CODE_BODY.split("{", 1)[0]
CODE_MESSAGE_KIND = "identity_verification_code"


def _retire_code_text(session: Session, issued: VerificationCode, reason: str) -> bool:
    """Replace the case's verification email in the outbox by `RETIRED_CODE_BODY` (in the
    caller's transaction): True when it still held the code."""
    message = session.get(Message, issued.message_id) if issued.message_id is not None else None
    if message is None or message.kind != CODE_MESSAGE_KIND:
        return False
    if message.body.startswith(_RETIRED_PREFIX):
        return False
    message.body = RETIRED_CODE_BODY.format(reason=reason)
    session.add(message)
    return True


def _digest(salt: str, code: str) -> str:
    return hmac.new(bytes.fromhex(salt), code.strip().encode(), hashlib.sha256).hexdigest()


def record_code_attempt(engine: Engine, case_id: str, code: str) -> str:
    """Store what a person entered for `case_id` (as the code's salted HMAC) and return the
    attempt id the entry point sends to the case. The entered code is never stored."""
    with Session(engine) as session:
        issued = session.get(VerificationCode, case_id)
        if issued is None:
            raise UnknownVerification(f"no verification code was sent for case {case_id}")
        stored = session.exec(
            select(func.count())
            .select_from(VerificationAttempt)
            .where(VerificationAttempt.case_id == case_id)
        ).one()
        if stored >= MAX_STORED_ATTEMPTS:
            raise AttemptsExhausted(
                f"case {case_id} already has {stored} code attempts; no more are taken"
            )
        attempt = VerificationAttempt(
            attempt_id=f"A-{secrets.token_hex(12)}",
            case_id=case_id,
            digest=_digest(issued.salt, code),
        )
        session.add(attempt)
        session.commit()
        return attempt.attempt_id


# --- the activities -------------------------------------------------------------------------


class IdentityActivities:
    def __init__(self, directory: ScimDirectory, engine: Engine) -> None:
        self._directory = directory
        self._engine = engine
        create_identity_tables(engine)

    @classmethod
    def from_env(cls, engine: Engine) -> IdentityActivities:
        """On the directory `PODIUM_SCIM_URL` / `PODIUM_SCIM_TOKEN` name (default: the embedded
        one of `podium up`)."""
        return cls(ScimDirectory.from_settings(ScimSettings()), engine)

    @property
    def directory(self) -> ScimDirectory:
        return self._directory

    def activities(self) -> list[Callable[..., Any]]:
        """Every activity of the identity system, for a worker to register."""
        return [
            self.lookup_employee,
            self.send_verification_code,
            self.check_verification_code,
            self.retire_verification_code,
            self.reset_password,
        ]

    @activity.defn(name="lookup_employee")
    async def lookup_employee(self, input: LookupEmployeeInput) -> LookupEmployeeResult:
        directory = self._directory
        user = await directory.find_user(input.user_name)
        if user is None:
            return LookupEmployeeResult()
        user_id = str(user["id"])
        enterprise = user.get(ENTERPRISE_USER) or {}
        manager_id = (enterprise.get("manager") or {}).get("value")
        manager_name: str | None = None
        if manager_id:
            manager = await directory.get_user(str(manager_id))
            manager_name = str(manager["userName"]) if manager else None
        return LookupEmployeeResult(
            employee=EmployeeInfo(
                user_id=user_id,
                user_name=str(user["userName"]),
                display_name=user.get("displayName"),
                title=user.get("title"),
                department=enterprise.get("department"),
                manager_id=manager_id,
                manager_user_name=manager_name,
                employee_number=enterprise.get("employeeNumber"),
                # SCIM: an absent `active` means active.
                active=bool(user.get("active", True)),
                groups=await directory.groups_of(user_id),
                email_masked=mask_email(_primary_email(user)),
            )
        )

    async def _address_on_file(self, user_id: str) -> str:
        user = await self._directory.get_user(user_id)
        address = _primary_email(user) if user else None
        if address is None:
            raise ApplicationError(
                f"user {user_id} has no email address on file",
                type="NoAddressOnFile",
                non_retryable=True,
            )
        return address

    @activity.defn(name="send_verification_code")
    async def send_verification_code(
        self, input: SendVerificationCodeInput
    ) -> SendVerificationCodeResult:
        """Draw a one-time code, keep its salted HMAC and send it to the address on file."""
        sent = await asyncio.to_thread(self._sent_code, input.idempotency_key)
        if sent is not None:
            return sent
        address = await self._address_on_file(input.user_id)
        return await asyncio.to_thread(self._store_code, input, address)

    def _sent_code(self, key: str) -> SendVerificationCodeResult | None:
        with Session(self._engine) as session:
            row = session.exec(
                select(VerificationCode).where(VerificationCode.idempotency_key == key)
            ).first()
            if row is None:
                return None
            return SendVerificationCodeResult(
                sent_to=row.sent_to, message_id=f"M-{row.message_id}", created=False
            )

    def _store_code(
        self, input: SendVerificationCodeInput, address: str
    ) -> SendVerificationCodeResult:
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_hex(16)
        masked = mask_email(address) or "-"
        expires = input.expires_at.astimezone(UTC).strftime("%H:%M UTC")
        with Session(self._engine) as session:
            message = Message(
                idempotency_key=input.idempotency_key,
                case_id=input.case_id,
                kind=CODE_MESSAGE_KIND,
                channel="email",
                recipient=address,
                body=(
                    f"Your Podium verification code is {code}. It expires at {expires}. "
                    "If you did not ask for a password reset, tell the IT service desk."
                ),
            )
            session.add(message)
            try:
                session.flush()
                session.add(
                    VerificationCode(
                        case_id=input.case_id,
                        idempotency_key=input.idempotency_key,
                        user_id=input.user_id,
                        salt=salt,
                        digest=_digest(salt, code),
                        expires_at=input.expires_at,
                        message_id=message.id,
                        sent_to=masked,
                    )
                )
                session.commit()
            except IntegrityError:
                session.rollback()
                found = self._sent_code(input.idempotency_key)
                if found is None:
                    raise ApplicationError(
                        f"case {input.case_id} already has a verification code",
                        type="CodeAlreadySent",
                        non_retryable=True,
                    ) from None
                return found
            log.info(
                "verification_code_sent",
                case_id=input.case_id,
                sent_to=masked,
                message_id=message.id,
            )
            return SendVerificationCodeResult(
                sent_to=masked, message_id=f"M-{message.id}", created=True
            )

    @activity.defn(name="check_verification_code")
    def check_verification_code(
        self, input: CheckVerificationCodeInput
    ) -> CheckVerificationCodeResult:
        """Compare an attempt with the case's code, once: a retry answers the first result."""
        with Session(self._engine) as session:
            attempt = session.get(VerificationAttempt, input.attempt_id)
            if attempt is None or attempt.case_id != input.case_id:
                return CheckVerificationCodeResult(valid=False, reason="unknown_attempt")
            if attempt.result is not None:
                return CheckVerificationCodeResult(
                    valid=attempt.result == "matched", reason=attempt.result
                )
            issued = session.get(VerificationCode, input.case_id)
            if issued is None:
                result = "unknown_attempt"
            elif issued.used_at is not None:
                result = "used"
            elif _utcnow() >= _aware(issued.expires_at):
                result = "expired"
            elif hmac.compare_digest(attempt.digest, issued.digest):
                result = "matched"
                issued.used_at = _utcnow()
                session.add(issued)
                # Used: its text leaves the outbox with it.
                _retire_code_text(session, issued, "used")
            else:
                result = "wrong_code"
            attempt.result = result
            session.add(attempt)
            session.commit()
        return CheckVerificationCodeResult(valid=result == "matched", reason=result)

    @activity.defn(name="retire_verification_code")
    def retire_verification_code(
        self, input: RetireVerificationCodeInput
    ) -> RetireVerificationCodeResult:
        """The case takes no more codes (verified, expired or locked): the code's text leaves
        the outbox, where the demo keeps the email it would send. Idempotent."""
        with Session(self._engine) as session:
            issued = session.get(VerificationCode, input.case_id)
            if issued is None:
                return RetireVerificationCodeResult(redacted=False)
            redacted = _retire_code_text(session, issued, input.reason)
            session.commit()
        if redacted:
            log.info("verification_code_retired", case_id=input.case_id, reason=input.reason)
        return RetireVerificationCodeResult(redacted=redacted)

    @activity.defn(name="reset_password")
    async def reset_password(self, input: ResetPasswordInput) -> ResetPasswordResult:
        """Set a temporary password in the directory and send it to the address on file.

        Once per idempotency key, and one password change in the directory whatever the
        retries: the write is noted first (`PendingPasswordWrite`: the user's version before it,
        and the password); a retry whose earlier write reached the directory but whose answer
        was lost sees the user's version moved on, and records that write instead of writing
        again; a retry whose write never got there writes the same password. (A directory that
        keeps no version cannot tell: it is written again.)"""
        done = await asyncio.to_thread(self._reset_done, input.idempotency_key)
        if done is not None:
            return done
        user = await self._directory.get_user(input.user_id)
        address = _primary_email(user) if user else None
        if user is None or address is None:
            raise ApplicationError(
                f"user {input.user_id} has no email address on file",
                type="NoAddressOnFile",
                non_retryable=True,
            )
        version = _version_of(user)
        pending = await asyncio.to_thread(self._begin_write, input, version)
        if pending.version_before is not None and version != pending.version_before:
            # An earlier attempt wrote this password and its answer was lost (the user changed
            # since that attempt began): writing again would change the password twice.
            log.info("password_write_found", case_id=input.case_id)
        else:
            try:
                version = await self._directory.set_password(input.user_id, pending.password)
            except ApplicationError as err:
                if err.non_retryable:
                    # Refused: nothing was written and no retry will use this password.
                    await asyncio.to_thread(self._drop_write, input.idempotency_key)
                raise
        return await asyncio.to_thread(self._record_reset, input, address, version)

    def _begin_write(self, input: ResetPasswordInput, version: str | None) -> PendingPasswordWrite:
        """The write of this reset: the one an earlier attempt began, else a new one with a
        fresh temporary password and the user's version before it."""
        key = input.idempotency_key
        with Session(self._engine) as session:
            found = session.get(PendingPasswordWrite, key)
            if found is not None:
                session.expunge(found)
                return found
            pending = PendingPasswordWrite(
                idempotency_key=key,
                case_id=input.case_id,
                user_id=input.user_id,
                version_before=version,
                password="".join(
                    secrets.choice(_PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH)
                ),
            )
            session.add(pending)
            try:
                session.commit()
            except IntegrityError:  # another attempt began it in between
                session.rollback()
                again = session.get(PendingPasswordWrite, key)
                assert again is not None
                session.expunge(again)
                return again
            session.refresh(pending)
            session.expunge(pending)
            return pending

    def _drop_write(self, key: str) -> None:
        with Session(self._engine) as session:
            found = session.get(PendingPasswordWrite, key)
            if found is not None:
                session.delete(found)
                session.commit()

    def _reset_done(self, key: str) -> ResetPasswordResult | None:
        with Session(self._engine) as session:
            row = session.get(PasswordResetRecord, key)
            if row is None:
                return None
            return ResetPasswordResult(
                reset_at=_aware(row.reset_at),
                delivered_to=row.delivered_to,
                scim_version=row.scim_version,
                created=False,
            )

    def _record_reset(
        self, input: ResetPasswordInput, address: str, version: str | None
    ) -> ResetPasswordResult:
        """Record the reset and its email (the temporary password's one copy from now on) and
        forget the pending write, in one transaction."""
        masked = mask_email(address) or "-"
        record = PasswordResetRecord(
            idempotency_key=input.idempotency_key,
            case_id=input.case_id,
            user_id=input.user_id,
            delivered_to=masked,
            scim_version=version,
        )
        with Session(self._engine) as session:
            pending = session.get(PendingPasswordWrite, input.idempotency_key)
            if pending is None:  # another attempt recorded it in between
                found = self._reset_done(input.idempotency_key)
                if found is None:
                    raise ApplicationError(
                        f"the password write of case {input.case_id} is gone", type="ResetLost"
                    )
                return found
            session.add(record)
            session.add(
                Message(
                    idempotency_key=input.idempotency_key,
                    case_id=input.case_id,
                    kind="identity_temporary_password",
                    channel="email",
                    recipient=address,
                    body=(
                        f"Your password was reset. Your temporary password is "
                        f"{pending.password} ; sign in and choose a new one. If you did not "
                        "ask for this, tell the IT service desk at once."
                    ),
                )
            )
            session.delete(pending)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                found = self._reset_done(input.idempotency_key)
                if found is None:
                    raise
                return found
            session.refresh(record)
        log.info("password_reset_done", case_id=input.case_id, delivered_to=masked)
        return ResetPasswordResult(
            reset_at=_aware(record.reset_at),
            delivered_to=masked,
            scim_version=version,
            created=True,
        )
