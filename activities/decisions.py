"""The check every approval decision passes before a case applies it: its decision token.

The worker holds the decision key: the key never enters history. Update validators check a
decision before Temporal accepts it (`check`, installed for them when the verifier is built:
`workflows.contracts.approval.install_decision_check`); `verify_decision`, a local activity,
checks the decisions that arrive by signal (and those of cases started before validators
checked them). It answers who decides and in which roles (the token's subject and
roles, never the payload's), or why the decision is refused: no credential, a forged or
expired one, one made for another decision, or a decision that reached the case unencrypted
while the deployment encrypts its payloads.
"""

from __future__ import annotations

from temporalio import activity

from core.decision_tokens import DecisionKey, InvalidDecisionToken
from workflows.contracts.approval import (
    VerifyDecisionInput,
    VerifyDecisionResult,
    install_decision_check,
)

__all__ = ["DecisionVerifier"]


class DecisionVerifier:
    """`require_encrypted`: refuse decisions whose payload arrived in clear (set when the
    worker's client encrypts payloads). Building one installs its `check` for the update
    validators of this process."""

    def __init__(self, key: DecisionKey, *, require_encrypted: bool = False) -> None:
        self._key = key
        self._require_encrypted = require_encrypted
        install_decision_check(self.check)

    @activity.defn(name="verify_decision")
    def verify_decision(self, input: VerifyDecisionInput) -> VerifyDecisionResult:
        return self.check(input)

    def check(self, input: VerifyDecisionInput) -> VerifyDecisionResult:
        if self._require_encrypted and not input.encrypted:
            return VerifyDecisionResult(
                valid=False,
                reason="the decision arrived unencrypted; this deployment takes decisions only "
                "through the Podium API or an encrypting client",
            )
        try:
            verified = self._key.verify(input.credential, digest=input.digest)
        except InvalidDecisionToken as err:
            return VerifyDecisionResult(valid=False, reason=str(err))
        return VerifyDecisionResult(valid=True, subject=verified.subject, roles=verified.roles)
