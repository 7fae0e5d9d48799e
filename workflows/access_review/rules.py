"""Pure rules of the `access_review` process: who reviews a membership, and what a review's
answer (or its silence) does to it.

No I/O and no clock: unit tested directly, used by the workflow under passthrough.
"""

from __future__ import annotations

from workflows.access_review.types import AccessReviewOutcome, DeadlineAction
from workflows.contracts.access import ReviewItem
from workflows.contracts.approval import GateStatus

__all__ = ["outcome_of", "reviewer_for", "revokes", "same_person", "tally"]


def _norm(value: str | None) -> str:
    return (value or "").strip().casefold()


def same_person(who: str, user_name: str) -> bool:
    """Whether `who` (a user name, or an address whose local part is one) is `user_name`."""
    a, b = _norm(who), _norm(user_name)
    return bool(a) and bool(b) and (a == b or a.partition("@")[0] == b.partition("@")[0])


def reviewer_for(item: ReviewItem) -> str | None:
    """The member's manager; without one, the application's owner; never the member."""
    for candidate in (item.manager, item.owner):
        if candidate and not same_person(candidate, item.user_name):
            return candidate
    return None


def outcome_of(status: GateStatus, on_deadline: DeadlineAction) -> AccessReviewOutcome:
    """Approved keeps the access, rejected revokes it; no answer does what the policy says."""
    if status == GateStatus.APPROVED:
        return AccessReviewOutcome.CONFIRMED
    if status == GateStatus.REJECTED:
        return AccessReviewOutcome.REVOKED
    if on_deadline == DeadlineAction.KEEP:
        return AccessReviewOutcome.KEPT_AT_DEADLINE
    return AccessReviewOutcome.REVOKED_AT_DEADLINE


def revokes(outcome: AccessReviewOutcome) -> bool:
    return outcome in (AccessReviewOutcome.REVOKED, AccessReviewOutcome.REVOKED_AT_DEADLINE)


def tally(outcomes: list[str | None]) -> dict[str, int]:
    """How many reviews ended each way (open ones as `open`), in a stable order."""
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = outcome or "open"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
