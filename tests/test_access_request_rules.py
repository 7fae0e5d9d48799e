"""Unit tests of the access request's pure rules, its catalogue and policy files, and its
directory activities (grant and revoke against the embedded SCIM service: one write each, a
retry none, a membership the employee had before never revoked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from activities.access import DEFAULT_CATALOGUE, AccessActivities, CatalogueError, parse_catalogue
from activities.identity import ScimDirectory
from activities.types import EmployeeInfo
from core.db import create_tables, make_engine
from core.policy import evaluate, load_policy, policy_path
from starter.scim_server import APP_GROUPS, serving
from workflows.access_request.rules import (
    granted_days,
    is_pre_approved,
    same_person,
    why_no_manager,
    why_not_eligible,
)
from workflows.contracts.access import (
    AccessApproval,
    Entitlement,
    GrantAccessInput,
    LookupEntitlementInput,
    RevokeAccessInput,
)
from workflows.contracts.policy import AutonomyDecision, PolicyFacts

TOKEN = "rules-scim-token"


def employee(**overrides: object) -> EmployeeInfo:
    values: dict[str, object] = {
        "user_id": "u-1",
        "user_name": "ana.lima",
        "title": "Software Engineer",
        "department": "Engineering",
        "manager_user_name": "maria.chen",
        "active": True,
    }
    values.update(overrides)
    return EmployeeInfo.model_validate(values)


# --- rules ------------------------------------------------------------------------------------


def test_pre_approval_by_department_or_role_never_for_sensitive_access() -> None:
    by_department = Entitlement(
        level="read", group="g", pre_approved={"departments": ["engineering"]}
    )
    by_title = Entitlement(level="write", group="g", pre_approved={"titles": ["Software Engineer"]})
    assert is_pre_approved(by_department, employee())
    assert is_pre_approved(by_title, employee(department="Sales"))
    assert not is_pre_approved(by_department, employee(department="Sales"))
    assert not is_pre_approved(
        Entitlement(level="admin", group="g", approval=AccessApproval.SENSITIVE), employee()
    )
    with pytest.raises(ValueError, match="never pre-approved"):
        Entitlement(
            level="admin",
            group="g",
            approval=AccessApproval.SENSITIVE,
            pre_approved={"departments": ["Engineering"]},
        )


def test_duration_is_bounded_by_the_level() -> None:
    bounded = Entitlement(level="admin", group="g", max_days=30)
    assert (30, None) == granted_days(None, bounded)
    assert (7, None) == granted_days(7, bounded)
    days, why = granted_days(45, bounded)
    assert days is None and why is not None and "30-day limit" in why
    assert (None, None) == granted_days(None, Entitlement(level="read", group="g"))


def test_who_may_not_be_the_approver() -> None:
    assert same_person("Ana.Lima@example.com", "ana.lima")
    assert not same_person("ana.limas", "ana.lima")
    assert why_no_manager(employee(), "portal") is None
    assert "no manager" in (why_no_manager(employee(manager_user_name=None), "portal") or "")
    assert "asked for this" in (why_no_manager(employee(), "maria.chen@example.com") or "")
    assert why_not_eligible(None, "x") is not None
    assert why_not_eligible(employee(active=False), "ana.lima") is not None


# --- the files --------------------------------------------------------------------------------


def test_the_catalogue_loads_and_every_group_is_in_the_demo_directory() -> None:
    catalogue = parse_catalogue(DEFAULT_CATALOGUE.read_bytes())
    assert 12 == len(catalogue.digest)
    groups = {e.group for app in catalogue.applications.values() for e in app.levels.values()}
    assert groups <= set(APP_GROUPS)
    with pytest.raises(CatalogueError, match="never pre-approved"):
        parse_catalogue(
            b"version: x\napplications:\n  a:\n    title: A\n    owner: o\n    levels:\n"
            b"      admin: {group: g, approval: sensitive, pre_approved: {titles: [t]}}\n"
        )


@pytest.mark.parametrize(
    ("eligible", "sensitivity", "decision", "chain"),
    [
        (True, "standard", AutonomyDecision.AUTO_APPROVE, None),
        (False, "standard", AutonomyDecision.HUMAN, "manager"),
        (False, "sensitive", AutonomyDecision.HUMAN, "manager_and_owner"),
    ],
)
def test_the_policy_file_decides_autonomy(
    eligible: bool, sensitivity: str, decision: AutonomyDecision, chain: str | None
) -> None:
    policy = load_policy(policy_path(None, "access_request"))
    facts = PolicyFacts(eligible=eligible, system_sensitivity=sensitivity, employee_role="x")
    evaluation = evaluate(policy, facts)
    assert (decision, chain) == (evaluation.decision, evaluation.approval_chain)
    if evaluation.approval is not None:
        assert ["$manager"] == evaluation.approval.levels[0].approvers
        assert [] == evaluation.approval.levels[0].approver_roles


# --- the activities ---------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    return engine


@pytest.fixture
async def access(engine: Engine) -> AsyncIterator[AccessActivities]:
    async with serving(TOKEN) as (url, _):
        directory = ScimDirectory(url, TOKEN)
        yield AccessActivities(directory, engine, DEFAULT_CATALOGUE)
        await directory.aclose()


async def _user_id(access: AccessActivities, user_name: str) -> str:
    user = await access.directory.find_user(user_name)
    assert user is not None
    return str(user["id"])


async def test_a_grant_writes_once_and_a_retry_writes_nothing(access: AccessActivities) -> None:
    env = ActivityEnvironment()
    user_id = await _user_id(access, "ana.lima")
    grant = GrantAccessInput(
        idempotency_key="c-1:grant:1", case_id="c-1", user_id=user_id, group="app-github-read"
    )
    first = await env.run(access.grant_access, grant)
    again = await env.run(access.grant_access, grant)
    assert (True, False) == (first.granted, first.already_member)
    assert first == again
    assert 1 == access.directory.writes
    revoke = RevokeAccessInput(grant_key="c-1:grant:1", case_id="c-1", reason="expired")
    assert (await env.run(access.revoke_access, revoke)).revoked
    assert (await env.run(access.revoke_access, revoke)).revoked
    assert 2 == access.directory.writes
    group_id = await access.directory.group_id("app-github-read")
    assert group_id is not None
    assert not await access.directory.is_member(group_id, user_id)


async def test_a_membership_the_employee_had_before_is_never_revoked(
    access: AccessActivities,
) -> None:
    env = ActivityEnvironment()
    user_id = await _user_id(access, "ana.lima")
    group_id = await access.directory.group_id("app-github-read")
    assert group_id is not None
    assert await access.directory.add_member(group_id, user_id)
    writes = access.directory.writes
    grant = GrantAccessInput(
        idempotency_key="c-2:grant:1", case_id="c-2", user_id=user_id, group="app-github-read"
    )
    done = await env.run(access.grant_access, grant)
    assert (False, True) == (done.granted, done.already_member)
    revoke = RevokeAccessInput(grant_key="c-2:grant:1", case_id="c-2", reason="expired")
    assert not (await env.run(access.revoke_access, revoke)).revoked
    assert writes == access.directory.writes
    assert await access.directory.is_member(group_id, user_id)


async def test_an_unknown_level_is_not_in_the_catalogue(access: AccessActivities) -> None:
    env = ActivityEnvironment()
    found = env.run(
        access.lookup_entitlement, LookupEntitlementInput(application="GitHub", level="Admin")
    )
    assert found.entitlement is not None and 30 == found.entitlement.max_days
    missing = env.run(
        access.lookup_entitlement, LookupEntitlementInput(application="github", level="owner")
    )
    assert missing.entitlement is None and "known: admin, read, write" in missing.reason


# --- policy as code off -------------------------------------------------------------------------


def test_with_policy_as_code_off_a_case_starts_on_the_typed_defaults_of_the_file() -> None:
    """PODIUM_POLICY_AS_CODE=false used to make `prepare` raise (a 500 from the API)."""
    from core.policy import load_policy, policy_path
    from workflows.access_request.starting import (
        TYPED_DEFAULTS,
        AccessRequestRequest,
        prepare,
        typed_defaults,
    )
    from workflows.contracts.case import CaseContext

    request = AccessRequestRequest(
        employee="ana.lima", application="github", access_level="read", justification="reviews"
    )
    started = prepare(request, CaseContext(case_id="access_request-x", requested_by="portal"))
    assert typed_defaults() == started.policy_document
    assert TYPED_DEFAULTS == started.policy_document["digest"]
    file = load_policy(policy_path(None, "access_request")).model_dump(mode="json")
    ignored = {"version", "digest"}
    assert {k: v for k, v in file.items() if k not in ignored} == {
        k: v for k, v in typed_defaults().items() if k not in ignored
    }
