"""Load, validate and evaluate policy files (`policies/*.yaml`), deterministically.

Conditions are `rule-engine` expressions (a small typed language: no Python eval), compiled on
load against the known facts (`workflows.contracts.policy.FACT_TYPES`), so a typo or an unknown
fact fails `podium policy check` with the file, the field and the rule's name.
The version of a policy is the short sha256 of its file's bytes: any edit is a new version.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import rule_engine
import yaml
from pydantic import BaseModel, ValidationError

from workflows.contracts.policy import (
    FACT_TYPES,
    AutonomyDecision,
    PolicyDocument,
    PolicyEvaluation,
    PolicyFacts,
)

_M = TypeVar("_M", bound=BaseModel)

__all__ = [
    "DEFAULT_POLICIES_DIR",
    "DEFAULT_POLICY_FILE",
    "PolicyError",
    "evaluate",
    "load_policy",
    "load_policy_model",
    "parse_policy",
    "policy_digest",
    "policy_path",
]

DEFAULT_POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
# The refund process's file: the policy `podium policy` checks and simulates by default.
DEFAULT_POLICY_FILE = DEFAULT_POLICIES_DIR / "refund.yaml"
DIGEST_LENGTH = 12
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class PolicyError(ValueError):
    """A policy file that does not load; `errors` are 'file: field: message' lines."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


def policy_digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:DIGEST_LENGTH]


def policy_path(policies_dir: Path | None, stem: str) -> Path:
    """A process's policy file: `<policies_dir>/<stem>.yaml` (default: the repository's)."""
    return (policies_dir or DEFAULT_POLICIES_DIR) / f"{stem}.yaml"


def load_policy(path: Path) -> PolicyDocument:
    try:
        content = path.read_bytes()
    except OSError as err:
        raise PolicyError([f"{path}: cannot read: {err.strerror or err}"]) from None
    return parse_policy(content, source=str(path))


def load_policy_model(path: Path, model: type[_M], *, shape: str = "") -> _M:
    """A policy-like file (priorities, the ROI baseline, a process's own policy) read as
    `model`, its `digest` set from its bytes (never by the file); `PolicyError` with
    'file: field: message' lines otherwise. `shape`: the fields named when it is no mapping."""
    try:
        content = path.read_bytes()
        raw = yaml.safe_load(content)
    except OSError as err:
        raise PolicyError([f"{path}: cannot read: {err.strerror or err}"]) from None
    except yaml.YAMLError as err:
        raise PolicyError([f"{path}: not valid YAML: {err}"]) from None
    if not isinstance(raw, dict):
        raise PolicyError(
            [f"{path}: the file must be a mapping" + (f" ({shape})" if shape else "")]
        )
    raw.pop("digest", None)
    try:
        return model.model_validate({**raw, "digest": policy_digest(content)})
    except ValidationError as err:
        raise PolicyError(
            [
                f"{path}: {'.'.join(str(part) for part in error['loc']) or '(top level)'}: "
                + ("unknown field" if error["type"] == "extra_forbidden" else error["msg"])
                for error in err.errors()
            ]
        ) from None


def parse_policy(content: bytes, *, source: str = "<policy>") -> PolicyDocument:
    try:
        raw = yaml.safe_load(content)
    except yaml.YAMLError as err:
        raise PolicyError([f"{source}: not valid YAML: {err}"]) from None
    if not isinstance(raw, dict):
        raise PolicyError([f"{source}: the file must be a mapping (version, autonomy, ...)"])
    raw.pop("digest", None)  # never the file's to set
    try:
        document = PolicyDocument.model_validate({**raw, "digest": policy_digest(content)})
    except ValidationError as err:
        raise PolicyError([_describe(source, raw, error) for error in err.errors()]) from None
    errors: list[str] = []
    for index, rule in enumerate(document.autonomy):
        field = f"autonomy[{index}]"
        try:
            _compile(rule.when)
        except rule_engine.errors.EngineError as exc:
            errors.append(f"{source}: {field}.when: rule '{rule.name}': {_engine_message(exc)}")
        unknown = sorted(set(_PLACEHOLDER.findall(rule.explain)) - set(FACT_TYPES))
        if unknown:
            errors.append(
                f"{source}: {field}.explain: rule '{rule.name}': unknown fact(s) "
                + ", ".join(unknown)
            )
    if errors:
        raise PolicyError(errors)
    return document


def evaluate(document: PolicyDocument, facts: PolicyFacts) -> PolicyEvaluation:
    """First matching rule wins; the last rule is always the default (`when: true`)."""
    values = _context_values(document, facts)
    for rule in document.autonomy:
        if _compile(rule.when).matches(values):
            explained = _PLACEHOLDER.sub(lambda m: _show(values[m.group(1)]), rule.explain)
            chain = rule.approval if rule.decision == AutonomyDecision.HUMAN else None
            if rule.decision == AutonomyDecision.AUTO_APPROVE:
                over_budget = _over_budget(document, facts, rule.name)
                if over_budget is not None:
                    return over_budget
            return PolicyEvaluation(
                decision=rule.decision,
                rule=rule.name,
                explanation=f"rule {rule.name} matched: {explained}",
                approval_chain=chain,
                approval=document.approvals[chain] if chain else None,
                policy_version=document.digest,
            )
    raise AssertionError("the validated policy ends with a default rule")


def _over_budget(
    document: PolicyDocument, facts: PolicyFacts, rule: str
) -> PolicyEvaluation | None:
    """A case whose model spend is over the per-case budget is never approved automatically:
    a person decides, on the budget's chain or else the default rule's."""
    cap = document.budget.max_model_cost_usd_per_case
    if cap is None or facts.model_cost_usd <= cap:
        return None
    chain = document.budget.approval or _default_chain(document)
    return PolicyEvaluation(
        decision=AutonomyDecision.HUMAN,
        rule="budget",
        explanation=(
            f"rule {rule} would approve, but model spend ${_usd(facts.model_cost_usd)} is over "
            f"the per-case budget of ${_usd(cap)}: a person decides"
        ),
        approval_chain=chain,
        approval=document.approvals[chain],
        policy_version=document.digest,
    )


def _default_chain(document: PolicyDocument) -> str:
    """The default rule's chain; if the default decides alone, the last human rule's, else the
    first chain of the file."""
    for rule in reversed(document.autonomy):
        if rule.approval is not None:
            return rule.approval
    return next(iter(document.approvals))


@lru_cache(maxsize=512)
def _compile(expression: str) -> rule_engine.Rule:
    types = {name: getattr(rule_engine.DataType, kind) for name, kind in FACT_TYPES.items()}
    context = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(types))
    return rule_engine.Rule(expression, context=context)


def _context_values(document: PolicyDocument, facts: PolicyFacts) -> dict[str, Any]:
    values: dict[str, Any] = facts.model_dump()
    limits = document.limits
    values["auto_refund_limit"] = limits.auto_refund_limit
    values["return_window_days"] = float(limits.return_window_days)
    values["min_intent_confidence"] = limits.min_intent_confidence
    for name, kind in FACT_TYPES.items():
        if kind == "FLOAT":
            values[name] = float(values[name])
    return values


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | Decimal):
        return f"{value:,.2f}"
    return str(value)


def _usd(value: float) -> str:
    """Cents, or up to four decimals where cents would hide the difference ($0.0512)."""
    text = f"{value:,.4f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{value:,.2f}"


def _engine_message(exc: Exception) -> str:
    if isinstance(exc, rule_engine.errors.SymbolResolutionError):
        return f"unknown fact '{exc.symbol_name}' (known: {', '.join(FACT_TYPES)})"
    if isinstance(exc, rule_engine.errors.RuleSyntaxError):
        token = getattr(exc, "token", None)
        where = f" near '{token.value}'" if token is not None else " (incomplete expression)"
        return f"syntax error{where}"
    return str(getattr(exc, "message", exc))


def _describe(source: str, raw: Mapping[str, Any], error: Any) -> str:
    """'file: autonomy[2].when: rule 'x': message' from a pydantic error."""
    loc = [part for part in error["loc"] if part != "digest"]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    rule = ""
    if len(loc) >= 2 and loc[0] == "autonomy" and isinstance(loc[1], int):
        rules = raw.get("autonomy")
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            rule = f"rule '{rules[loc[1]].get('name', '?')}': "
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return f"{source}: {field or '(top level)'}: {rule}{message}"
