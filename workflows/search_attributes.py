"""Podium's custom search attributes: what an operator filters on in the Temporal UI.

Registered by `podium up` (embedded server) or `podium temporal register-search-attributes`
(an existing cluster). Example filter, refunds awaiting approval over $100:

    PodiumProcess = "refund" AND PodiumAwaitingApproval = true AND PodiumAmount > 100
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

__all__ = [
    "ALL",
    "AMOUNT",
    "AWAITING_APPROVAL",
    "CUSTOMER_ID",
    "CUSTOMER_TIER",
    "ESCALATED",
    "INTENT",
    "OUTCOME",
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
SLA_DUE_AT = SearchAttributeKey.for_datetime("PodiumSlaDueAt")

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
)
