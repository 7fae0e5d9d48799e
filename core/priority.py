"""Which cases go first: the priority key a case starts with (`policies/priority.yaml`).

Temporal orders a backlogged task queue by priority key, 1 (first) to 5 (last), 3 when none is
set; a case's activities, its model calls on the rate-limited models' queue among them
(`core.task_queues`), inherit its key. The starter sets the key when it opens a case, from the
case's facts: the customer's tier, the amount at stake, the SLA the case starts with and the
channel it came through. Every rule that matches proposes a key and the most urgent one wins; no
rule matching leaves the file's `default`. The reasons (rule names) go with the key into the
log and the case's details in the Temporal UI. The worker
(`core.scheduling`) applies the same rules to a running case's activities once it knows more.
`podium policy check` validates the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_PRIORITY",
    "HIGHEST",
    "LOWEST",
    "PRIORITY_FILE_STEM",
    "PriorityChoice",
    "PriorityFacts",
    "PriorityPolicy",
    "PriorityRule",
    "PriorityWhen",
    "choose_priority",
    "load_priority_policy",
]

PRIORITY_FILE_STEM = "priority"
HIGHEST, LOWEST = 1, 5
DEFAULT_PRIORITY = 3


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorityWhen(_Strict):
    """What a rule asks of a case; every condition given must hold (at least one is given)."""

    customer_tier: list[str] | None = Field(default=None, min_length=1)
    channel: list[str] | None = Field(default=None, min_length=1)
    process: list[str] | None = Field(default=None, min_length=1)
    amount_cents_at_least: int | None = Field(default=None, ge=0)
    # The SLA left: at the start, the process's SLA (`sla_hours`); later, what remains of it
    # (negative once it has passed).
    sla_left_hours_at_most: float | None = None

    @model_validator(mode="after")
    def _something(self) -> PriorityWhen:
        if not self.model_dump(exclude_none=True):
            raise ValueError("a rule needs at least one condition")
        return self


class PriorityRule(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    when: PriorityWhen
    priority: int = Field(ge=HIGHEST, le=LOWEST)


class PriorityPolicy(_Strict):
    """`policies/priority.yaml`."""

    version: str = Field(min_length=1, max_length=64)
    digest: str = ""
    default: int = Field(default=DEFAULT_PRIORITY, ge=HIGHEST, le=LOWEST)
    # The SLA a case of each process starts with, in hours (a process not listed has none).
    sla_hours: dict[str, float] = Field(default_factory=dict)
    rules: list[PriorityRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> PriorityPolicy:
        names = [rule.name for rule in self.rules]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"rule names must be unique: {', '.join(doubled)}")
        if any(hours <= 0 for hours in self.sla_hours.values()):
            raise ValueError("sla_hours must be positive")
        return self


class PriorityFacts(BaseModel):
    """What the policy reads of a case."""

    process: str
    channel: str | None = None
    customer_tier: str | None = None
    amount_cents: int | None = None
    sla_left_hours: float | None = None

    @classmethod
    def of(cls, process: str, case_input: Any, policy: PriorityPolicy) -> PriorityFacts:
        """The facts of a new case's input (fields it has by these names; none personal)."""

        def field(name: str) -> Any:
            value = getattr(case_input, name, None)
            return getattr(value, "value", value)  # enums: their value

        amount = field("amount_cents")
        tier, channel = field("customer_tier"), field("channel")
        return cls(
            process=process,
            channel=channel if isinstance(channel, str) else None,
            customer_tier=tier if isinstance(tier, str) else None,
            amount_cents=amount if isinstance(amount, int) else None,
            sla_left_hours=policy.sla_hours.get(process),
        )


class PriorityChoice(BaseModel):
    key: int
    reasons: list[str]
    version: str


def choose_priority(policy: PriorityPolicy, facts: PriorityFacts) -> PriorityChoice:
    """The most urgent key any matching rule proposes, with every matching rule's name."""
    matched = [rule for rule in policy.rules if _matches(rule.when, facts)]
    if not matched:
        return PriorityChoice(key=policy.default, reasons=[], version=policy.version)
    return PriorityChoice(
        key=min(rule.priority for rule in matched),
        reasons=[rule.name for rule in matched],
        version=policy.version,
    )


def _matches(when: PriorityWhen, facts: PriorityFacts) -> bool:
    def within(values: list[str] | None, value: str | None) -> bool:
        return values is None or (
            value is not None and value.casefold() in {v.casefold() for v in values}
        )

    return (
        within(when.customer_tier, facts.customer_tier)
        and within(when.channel, facts.channel)
        and within(when.process, facts.process)
        and (
            when.amount_cents_at_least is None
            or (facts.amount_cents is not None and facts.amount_cents >= when.amount_cents_at_least)
        )
        and (
            when.sla_left_hours_at_most is None
            or (
                facts.sla_left_hours is not None
                and facts.sla_left_hours <= when.sla_left_hours_at_most
            )
        )
    )


def load_priority_policy(path: Path) -> PriorityPolicy:
    """Read and validate the file; `core.policy.PolicyError` lists what is wrong."""
    from core.policy import load_policy_model

    return load_policy_model(path, PriorityPolicy)
