"""Pure rules of the `access_request` process: pre-approval, duration, who may not decide.

No I/O and no clock: unit tested directly, used by the workflow under passthrough.
"""

from __future__ import annotations

from activities.types import EmployeeInfo
from workflows.contracts.access import AccessApproval, Entitlement

__all__ = [
    "granted_days",
    "is_pre_approved",
    "same_person",
    "why_no_manager",
    "why_not_eligible",
]


def _norm(value: str | None) -> str:
    return (value or "").strip().casefold()


def same_person(who: str, user_name: str) -> bool:
    """Whether `who` (a user name, or an address whose local part is one) is `user_name`."""
    a, b = _norm(who), _norm(user_name)
    return bool(a) and bool(b) and (a == b or a.partition("@")[0] == b.partition("@")[0])


def is_pre_approved(entitlement: Entitlement, employee: EmployeeInfo) -> bool:
    """Standard access pre-approved for the employee's department or role (title)."""
    if entitlement.approval == AccessApproval.SENSITIVE:
        return False
    rule = entitlement.pre_approved
    return _norm(employee.department) in {_norm(d) for d in rule.departments} or _norm(
        employee.title
    ) in {_norm(t) for t in rule.titles}


def granted_days(requested: int | None, entitlement: Entitlement) -> tuple[int | None, str | None]:
    """How many days the access lasts (None: no expiry), or why the request cannot be granted.
    A level with `max_days` is always time-bound: without a requested duration, its maximum."""
    limit = entitlement.max_days
    if requested is None:
        return limit, None
    if limit is not None and requested > limit:
        return None, f"{requested} days is over the {limit}-day limit of this access level"
    return requested, None


def why_not_eligible(employee: EmployeeInfo | None, user_name: str) -> str | None:
    if employee is None:
        return f"no employee '{user_name}' in the directory"
    if not employee.active:
        return f"'{employee.user_name}' is not active in the directory (left or suspended)"
    return None


def why_no_manager(employee: EmployeeInfo, requested_by: str) -> str | None:
    """Why the employee's manager cannot be the named approver (four-eyes), or None."""
    manager = employee.manager_user_name
    if not manager:
        return f"'{employee.user_name}' has no manager in the directory to approve"
    if same_person(manager, employee.user_name):
        return f"'{employee.user_name}' is their own manager in the directory"
    if same_person(requested_by, manager):
        return f"the manager '{manager}' asked for this access and may not approve it"
    return None
