"""Pure rules of the `password_reset` process: who may be reset, and who must approve first.

No I/O and no clock: unit tested directly, used by the workflow under passthrough.
"""

from __future__ import annotations

from activities.types import EmployeeInfo

__all__ = ["is_privileged", "is_the_employee", "privileged_groups_of", "why_not_eligible"]


def privileged_groups_of(employee: EmployeeInfo, privileged: list[str]) -> list[str]:
    """The employee's directory groups that make the account privileged (case-insensitive)."""
    wanted = {name.strip().casefold() for name in privileged}
    return sorted(group for group in employee.groups if group.strip().casefold() in wanted)


def is_privileged(employee: EmployeeInfo, privileged: list[str]) -> bool:
    return bool(privileged_groups_of(employee, privileged))


def why_not_eligible(employee: EmployeeInfo | None, user_name: str) -> str | None:
    """Why no code may be sent and nothing reset, or None when the reset may go on."""
    if employee is None:
        return f"no employee '{user_name}' in the directory"
    if not employee.active:
        return f"the account of '{employee.user_name}' is not active (left or suspended)"
    if not employee.email_masked:
        return f"'{employee.user_name}' has no email address on file to send a code to"
    return None


def is_the_employee(subject: str, employee: EmployeeInfo) -> bool:
    """Whether a verified caller (a person's credential subject) is the employee whose password
    is reset: the directory's user name, or that name at the domain of the address on file
    (`ana.lima` or `ana.lima@example.com`), compared case-insensitively. Anyone else (a
    colleague, the service desk, an admin, a service key) is not: a code proves only the
    possession of the employee's mailbox when the employee enters it."""
    who = subject.strip().casefold()
    name = employee.user_name.strip().casefold()
    if not who or not name:
        return False
    if who == name:
        return True
    masked = employee.email_masked or ""
    domain = masked.partition("@")[2].strip().casefold()
    return bool(domain) and who == f"{name}@{domain}"
