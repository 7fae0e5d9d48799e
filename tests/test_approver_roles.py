"""The approval roles the API knows come from the registered processes' policies."""

from __future__ import annotations

from pathlib import Path

from core.policy import DEFAULT_POLICIES_DIR
from core.settings import Settings
from starter.api.roles import approver_roles, roles_named_in
from starter.auth import Authenticator, decide_permission
from workflows.password_reset.types import PasswordResetPolicy
from workflows.registry import PROCESSES


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_the_roles_of_every_registered_process_are_approval_roles() -> None:
    roles = approver_roles(PROCESSES, settings())
    # The refund's levels, and the password reset's (its privileged approval, and the service
    # desk's review of a locked case with it_security as backup).
    assert {"team_lead", "finance", "it_security", "it_service_desk"} <= roles
    assert {"it_security", "it_service_desk"} == roles_named_in(PasswordResetPolicy())


def test_a_role_only_a_policy_file_names_is_an_approval_role(tmp_path: Path) -> None:
    refund = (DEFAULT_POLICIES_DIR / "refund.yaml").read_text()
    assert "refund_auditor" not in refund
    (tmp_path / "refund.yaml").write_text(
        refund.replace("approver_roles: [finance]", "approver_roles: [finance, refund_auditor]")
    )
    assert "refund_auditor" in approver_roles(PROCESSES, settings(policies_dir=tmp_path))
    # Policy as code off: the file decides nothing, and names no role either.
    off = settings(policies_dir=tmp_path, policy_as_code=False)
    assert "refund_auditor" not in approver_roles(PROCESSES, off)


def test_a_process_role_may_decide_and_the_settings_still_add_theirs() -> None:
    configured = settings(approval_backup_roles=["night_shift"])
    authenticator = Authenticator(configured, approver_roles(PROCESSES, configured))
    desk = authenticator.permissions_for(["it_service_desk"])
    assert {"case:read", decide_permission("it_service_desk")} == set(desk)
    assert decide_permission("night_shift") in authenticator.permissions_for(["night_shift"])
    # Without the processes' roles, the settings alone know nothing of the service desk.
    assert frozenset() == Authenticator(configured).permissions_for(["it_service_desk"])
    admin = authenticator.permissions_for(["admin"])
    assert {decide_permission("it_security"), decide_permission("night_shift")} <= admin
