"""Podium's custom search attributes: what an operator filters on in the Temporal UI.

Registered by `podium up` (embedded server) or `podium temporal register-search-attributes`
(an existing cluster). Example filter, refunds awaiting approval over $100:

    PodiumProcess = "refund" AND PodiumAwaitingApproval = true AND PodiumAmount > 100

and an approver's inbox, what finance may decide right now:

    PodiumAwaitingApproval = true AND PodiumAwaitingRoles = "finance"
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = [
    "ALL",
    "AMOUNT",
    "APPROVAL_LEVEL",
    "AWAITING_APPROVAL",
    "AWAITING_ROLES",
    "CUSTOMER_ID",
    "CUSTOMER_TIER",
    "ESCALATED",
    "INTENT",
    "MODEL_COST_USD",
    "OUTCOME",
    "POLICY_VERSION",
    "PROCESS",
    "SLA_DUE_AT",
    "STATUS",
]

PROCESS = SearchAttributeKey.for_keyword("PodiumProcess")
STATUS = SearchAttributeKey.for_keyword("PodiumStatus")
OUTCOME = SearchAttributeKey.for_keyword("PodiumOutcome")
AWAITING_APPROVAL = SearchAttributeKey.for_bool("PodiumAwaitingApproval")
ESCALATED = SearchAttributeKey.for_bool("PodiumEscalated")
INTENT = SearchAttributeKey.for_keyword("PodiumIntent")
AMOUNT = SearchAttributeKey.for_float("PodiumAmount")  # dollars, for filters such as "> 100"
CUSTOMER_ID = SearchAttributeKey.for_keyword("PodiumCustomerId")
CUSTOMER_TIER = SearchAttributeKey.for_keyword("PodiumCustomerTier")
SLA_DUE_AT = SearchAttributeKey.for_datetime("PodiumSlaDueAt")  # due time of the current level
# Roles that may decide now, plus `user:<name>` for people a decision was delegated to.
AWAITING_ROLES = SearchAttributeKey.for_keyword_list("PodiumAwaitingRoles")
APPROVAL_LEVEL = SearchAttributeKey.for_int("PodiumApprovalLevel")  # 1-based level deciding now
# Model spend of the case so far, USD (every model activity's cost, summed by the workflow).
MODEL_COST_USD = SearchAttributeKey.for_float("PodiumModelCostUsd")
# The policy file (short sha256) the case was decided under.
POLICY_VERSION = SearchAttributeKey.for_keyword("PodiumPolicyVersion")

ALL: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    PROCESS,
    STATUS,
    OUTCOME,
    AWAITING_APPROVAL,
    ESCALATED,
    INTENT,
    AMOUNT,
    CUSTOMER_ID,
    CUSTOMER_TIER,
    SLA_DUE_AT,
    AWAITING_ROLES,
    APPROVAL_LEVEL,
    MODEL_COST_USD,
    POLICY_VERSION,
)
