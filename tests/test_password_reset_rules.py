"""The password reset's pure rules and its request: who may be reset, who needs a person."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from activities.types import EmployeeInfo
from core.policy import DEFAULT_POLICIES_DIR, PolicyError, policy_digest
from core.settings import Settings
from starter.cli import create_cli
from starter.client import load_process_policy
from workflows.contracts.case import CaseContext
from workflows.password_reset.rules import (
    is_privileged,
    is_the_employee,
    privileged_groups_of,
    why_not_eligible,
)
from workflows.password_reset.starting import PasswordResetRequest, describe, prepare
from workflows.password_reset.types import PasswordResetPolicy
from workflows.registry import PROCESSES

PRIVILEGED = ["admins", "finance"]


def employee(**fields: object) -> EmployeeInfo:
    values: dict[str, object] = {
        "user_id": "u1",
        "user_name": "ana.lima",
        "active": True,
        "groups": ["employees", "engineering"],
        "email_masked": "a***@example.com",
    }
    values.update(fields)
    return EmployeeInfo.model_validate(values)


def test_members_of_a_privileged_group_are_privileged_whatever_the_case() -> None:
    assert not is_privileged(employee(), PRIVILEGED)
    assert ["Finance"] == privileged_groups_of(employee(groups=["Finance", "sales"]), PRIVILEGED)
    assert is_privileged(employee(groups=["admins"]), PRIVILEGED)


def test_who_may_not_be_reset() -> None:
    assert why_not_eligible(employee(), "ana.lima") is None
    assert "no employee 'x'" in (why_not_eligible(None, "x") or "")
    assert "not active" in (why_not_eligible(employee(active=False), "ana.lima") or "")
    assert "no email address" in (why_not_eligible(employee(email_masked=None), "ana.lima") or "")


def test_only_the_employee_is_the_employee() -> None:
    ana = employee()
    for subject in ("ana.lima", " Ana.Lima ", "ana.lima@example.com", "ANA.LIMA@EXAMPLE.COM"):
        assert is_the_employee(subject, ana), subject
    for subject in ("", "ana", "ben.okafor", "ana.lima@elsewhere.test", "x.ana.lima@example.com"):
        assert not is_the_employee(subject, ana), subject
    # No address on file: the user name alone.
    assert not is_the_employee("ana.lima@example.com", employee(email_masked=None))


def test_the_request_names_an_account_and_nothing_to_send_to() -> None:
    request = PasswordResetRequest(user_name=" ana.lima ")
    case = prepare(request, CaseContext(case_id="password_reset-1", requested_by="desk@x.test"))
    assert ("ana.lima", "desk@x.test") == (case.user_name, case.requested_by)
    assert (10 * 60, 3) == (case.policy.code_ttl.total_seconds(), case.policy.max_attempts)
    assert ["admins", "finance"] == case.policy.privileged_groups
    assert "ana.lima" == describe(request).customer_id
    for extra in ({"email": "me@evil.test"}, {"password": "hunter2"}):
        with pytest.raises(ValidationError):
            PasswordResetRequest.model_validate({"user_name": "ana.lima", **extra})
    with pytest.raises(ValidationError):
        PasswordResetRequest(user_name="ana lima; drop")


def test_the_policy_file_holds_the_typed_defaults_and_is_versioned_by_its_bytes(
    tmp_path: Path,
) -> None:
    process = PROCESSES.get("password_reset")
    document = load_process_policy(process, Settings(_env_file=None))  # type: ignore[call-arg]
    assert document is not None
    shipped = (DEFAULT_POLICIES_DIR / "password_reset.yaml").read_bytes()
    assert policy_digest(shipped) == document["digest"]
    request = PasswordResetRequest(user_name="ana.lima")
    context = CaseContext(case_id="password_reset-1", requested_by="desk@x.test")
    case = prepare(request, context.model_copy(update={"policy_document": document}))
    defaults = PasswordResetPolicy().model_dump(exclude={"version", "digest"})
    assert defaults == case.policy.model_dump(exclude={"version", "digest"})
    assert (document["digest"], document["version"]) == (case.policy.digest, case.policy.version)
    # Policy as code off: the typed defaults, with no version.
    off = Settings(_env_file=None, policy_as_code=False)  # type: ignore[call-arg]
    assert load_process_policy(process, off) is None

    # A field the policy does not know is an error naming it, not a silent default.
    typo = tmp_path / "password_reset.yaml"
    typo.write_bytes(shipped.replace(b"max_attempts:", b"max_attempt:"))
    with pytest.raises(PolicyError, match="max_attempt: unknown field"):
        load_process_policy(process, Settings(_env_file=None, policies_dir=tmp_path))  # type: ignore[call-arg]
    checked = CliRunner().invoke(create_cli(), ["policy", "check", str(typo)])
    assert 1 == checked.exit_code
    ok = CliRunner().invoke(
        create_cli(), ["policy", "check", str(DEFAULT_POLICIES_DIR / "password_reset.yaml")]
    )
    assert 0 == ok.exit_code, ok.output
    assert f"version {document['digest']} (2026-12-password-reset-1)" in ok.output
