"""Podium's custom search attributes: what an operator filters on in the Temporal UI.

Registered by `podium up` (embedded server) or `podium temporal register-search-attributes`
(an existing cluster). Example filter, refunds awaiting approval over $100:

    PodiumProcess = "refund" AND PodiumAwaitingApproval = true AND PodiumAmount > 100

and an approver's inbox, what finance may decide right now:

    PodiumAwaitingApproval = true AND PodiumAwaitingRoles = "finance"

Search attributes are indexed in the clear by Temporal's visibility store, outside payload
encryption: no personal data goes there. A customer id that is an email, a phone or a card
number is set as `customer_id_attribute(id)`, a pseudonym (`pii-` and 20 hex of its SHA-256):
an operator who knows the address finds the case by computing the same value, nobody reading
the index learns it.
"""

from __future__ import annotations

import hashlib
import re

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
    "customer_id_attribute",
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


# Personal data as customer ids: an email, or a number written with 9 or more digits and
# nothing but phone and card punctuation (+, spaces, dots, dashes, parentheses).
_PHONE_OR_CARD = re.compile(r"^\+?[\d .()\-]+$")
_MIN_PERSONAL_DIGITS = 9
PSEUDONYM_PREFIX = "pii-"
_PSEUDONYM_HEX = 20


def _is_personal(value: str) -> bool:
    if "@" in value:
        return True
    digits = sum(char.isdigit() for char in value)
    return digits >= _MIN_PERSONAL_DIGITS and _PHONE_OR_CARD.match(value) is not None


def customer_id_attribute(customer_id: str) -> str:
    """The value of `PodiumCustomerId` for `customer_id`: the id itself (`C-1002`), or for an
    email, phone or card number a stable pseudonym of its normalised form (trimmed, lower case;
    digits only for numbers). Pure and deterministic: the starter and the workflows agree."""
    value = customer_id.strip()
    if not _is_personal(value):
        return customer_id
    normal = value.lower() if "@" in value else re.sub(r"\D", "", value)
    digest = hashlib.sha256(normal.encode()).hexdigest()[:_PSEUDONYM_HEX]
    return PSEUDONYM_PREFIX + digest
