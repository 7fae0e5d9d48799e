"""Policy-as-code: the models of a policy file (`policies/refund.yaml`) and of its evaluation.

Pure pydantic, no expression engine: safe to import from workflows (under passthrough), the
activities, the starter and tests. Expressions are compiled and evaluated by `core.policy`
(outside the sandbox, in the `evaluate_policy` activity), so a case's decision is in history.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workflows.contracts.approval import ApprovalPolicy

__all__ = [
    "FACT_TYPES",
    "AutonomyDecision",
    "AutonomyRule",
    "EvaluatePolicyInput",
    "PolicyBudget",
    "PolicyDocument",
    "PolicyEvaluation",
    "PolicyFacts",
    "PolicyLimits",
]


class AutonomyDecision(StrEnum):
    AUTO_APPROVE = "auto_approve"
    AUTO_REJECT = "auto_reject"
    HUMAN = "human"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutonomyRule(_Strict):
    """One ordered rule: the first whose `when` holds decides."""

    name: str = Field(min_length=1, max_length=64)
    when: str = Field(min_length=1, description="A rule-engine expression over the case facts")
    decision: AutonomyDecision
    approval: str | None = Field(default=None, description="Approval chain, for 'human'")
    explain: str = Field(min_length=1, description="Why, with {fact} placeholders")

    @model_validator(mode="after")
    def _human_needs_chain(self) -> Self:
        if self.decision == AutonomyDecision.HUMAN and not self.approval:
            raise ValueError("decision 'human' needs an approval chain")
        return self


class PolicyLimits(_Strict):
    auto_refund_limit: float = Field(default=100.0, ge=0, description="Dollars")
    return_window_days: int = Field(default=30, ge=0)
    min_intent_confidence: float = Field(default=0.5, ge=0.0, le=1.0)


class PolicyBudget(_Strict):
    max_model_cost_usd_per_case: float | None = Field(default=None, ge=0)
    approval: str | None = Field(
        default=None,
        description="Chain for a case over budget; by default the default rule's chain",
    )


class PolicyDocument(_Strict):
    """A validated policy file. `digest` is the short sha256 of the file's bytes: the policy
    version stamped on every case decided under it (set by the loader, never by the file)."""

    version: str = Field(min_length=1, max_length=64, description="A human label")
    digest: str = Field(default="", max_length=64)
    autonomy: list[AutonomyRule] = Field(min_length=1)
    approvals: dict[str, ApprovalPolicy] = Field(min_length=1)
    limits: PolicyLimits = Field(default_factory=PolicyLimits)
    allowed_agent_tools: list[str] = Field(default_factory=list)
    model_routing: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Task (intent, draft) -> models to try in order, instead of the route",
    )
    budget: PolicyBudget = Field(default_factory=PolicyBudget)

    def agent_tools(self, requested: list[str] | None = None) -> list[str]:
        """The agent's tool allowlist under this policy (`AgentAssistInput.tools`): the
        policy's `allowed_agent_tools`, narrowed to `requested` when the caller has its own
        list. Fails closed: a policy that lists no tools allows none."""
        if requested is None:
            return list(self.allowed_agent_tools)
        return [name for name in requested if name in self.allowed_agent_tools]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [rule.name for rule in self.autonomy]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"autonomy rule names must be unique: {', '.join(duplicates)}")
        last = self.autonomy[-1]
        if last.when.strip().lower() != "true":
            raise ValueError(
                f"the last autonomy rule must be the default (when: true), not '{last.name}'"
            )
        for rule in self.autonomy:
            if rule.approval is not None and rule.approval not in self.approvals:
                raise ValueError(
                    f"rule '{rule.name}': unknown approval chain '{rule.approval}' "
                    f"(known: {', '.join(sorted(self.approvals))})"
                )
        if self.budget.approval is not None and self.budget.approval not in self.approvals:
            raise ValueError(
                f"budget: unknown approval chain '{self.budget.approval}' "
                f"(known: {', '.join(sorted(self.approvals))})"
            )
        return self


# The facts a rule may name, and their types (rule-engine's, by name).
FACT_TYPES: dict[str, str] = {
    "amount": "FLOAT",
    "customer_tier": "STRING",
    "customer_standing": "STRING",
    "channel": "STRING",
    "intent": "STRING",
    "intent_confidence": "FLOAT",
    "sentiment": "STRING",
    "risk": "STRING",
    "eligible": "BOOLEAN",
    "late": "BOOLEAN",
    "within_return_window": "BOOLEAN",
    "already_refunded": "BOOLEAN",
    "receipt_mismatch": "BOOLEAN",
    "needs_human": "BOOLEAN",
    "employee_role": "STRING",
    "system_sensitivity": "STRING",
    "model_cost_usd": "FLOAT",
    # The policy's own limits, so a rule reads `amount <= auto_refund_limit`.
    "auto_refund_limit": "FLOAT",
    "return_window_days": "FLOAT",
    "min_intent_confidence": "FLOAT",
}


class PolicyFacts(BaseModel):
    """What a case looks like to the policy (the limits are added by the evaluator)."""

    amount: float = Field(default=0.0, description="Dollars")
    customer_tier: str = ""
    customer_standing: str = ""
    channel: str = ""
    intent: str = ""
    intent_confidence: float = 0.0
    sentiment: str = ""
    risk: str = ""
    eligible: bool = False
    late: bool = False
    within_return_window: bool = False
    already_refunded: bool = False
    receipt_mismatch: bool = False
    needs_human: bool = Field(default=False, description="A hold: e.g. no model sure of intent")
    employee_role: str = ""
    system_sensitivity: str = ""
    model_cost_usd: float = Field(default=0.0, description="Model spend on the case so far")


class EvaluatePolicyInput(BaseModel):
    """The facts and the policy: by digest (stored by the starter, table `policy_versions`), or
    the whole document, as cases started before policies were stored carry it."""

    facts: PolicyFacts
    policy: dict[str, object] | None = Field(
        default=None, description="PolicyDocument, serialized (older cases)"
    )
    policy_digest: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_policy(self) -> Self:
        if (self.policy is None) == (self.policy_digest is None):
            raise ValueError("give the policy document or its digest, not both or neither")
        return self


class PolicyEvaluation(BaseModel):
    decision: AutonomyDecision
    rule: str
    explanation: str = Field(description="'rule X matched: ...'")
    approval_chain: str | None = None
    approval: ApprovalPolicy | None = Field(default=None, description="The chain, for 'human'")
    policy_version: str
