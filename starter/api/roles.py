"""Which approval roles exist: the roles the registered processes' policies name.

A process says who approves in its policy: its policy file (`policies/<stem>.yaml`, when policy
as code is on) and the typed defaults of its input (`PasswordResetPolicy`'s `it_security` and
`it_service_desk`, the refund's `team_lead` and `finance`, ...). Every `approver_roles` and
`backup_roles` of an approval level found there is an approval role: a person whose credential
holds it may read cases and decide as that role (`starter.auth.Authenticator`), and sees what it
may decide in the inbox. The operator's settings (`PODIUM_APPROVAL_TEAM_LEAD_ROLES`,
`..._FINANCE_ROLES`, `..._BACKUP_ROLES`) still add roles of their own; nothing needs to be
configured for a process's roles any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import structlog
import yaml
from pydantic import BaseModel

from core.policy import policy_path
from core.settings import Settings
from workflows.registry import Process

__all__ = ["ROLE_FIELDS", "approver_roles", "roles_named_in"]

log = structlog.get_logger()

# The fields of an approval level (`workflows.contracts.approval.ApprovalLevel`) that name roles.
ROLE_FIELDS = ("approver_roles", "backup_roles")


def roles_named_in(value: Any) -> set[str]:
    """Every role an approval level names anywhere in `value` (a model, or plain data read from
    a policy file)."""
    return set(_walk(value.model_dump(mode="json") if isinstance(value, BaseModel) else value))


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ROLE_FIELDS and isinstance(item, list):
                yield from (role.strip() for role in item if isinstance(role, str) and role.strip())
            else:
                yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def _input_defaults(process: Process) -> Iterator[Any]:
    """The defaults of the process's input fields (its typed policy, when it has one)."""
    for field in process.input.model_fields.values():
        if field.is_required():
            continue
        yield field.get_default(call_default_factory=True, validated_data={})


def _policy_file(process: Process, settings: Settings) -> Any:
    if process.policy is None or not settings.policy_as_code:
        return None
    path = policy_path(settings.policies_dir, process.policy)
    try:
        return yaml.safe_load(path.read_bytes())
    except (OSError, yaml.YAMLError) as err:
        # A case of the process will not start either; the API itself still serves.
        log.warning("policy_file_unreadable", process=process.name, path=str(path), error=str(err))
        return None


def approver_roles(processes: Iterable[Process], settings: Settings) -> frozenset[str]:
    """The approval roles the processes' policies name (see the module)."""
    found: set[str] = set()
    for process in processes:
        for default in _input_defaults(process):
            found |= roles_named_in(default)
        found |= roles_named_in(_policy_file(process, settings))
    return frozenset(found)
