"""The policy activity: evaluate a case's facts against the policy stamped on the case.

An activity, not workflow code: the expression engine is not checked for the sandbox, and the
result in history makes replay deterministic (a policy change applies only to new cases).
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.policy import PolicyError, evaluate
from workflows.contracts.policy import EvaluatePolicyInput, PolicyDocument, PolicyEvaluation

__all__ = ["evaluate_policy"]


@activity.defn(name="evaluate_policy")
def evaluate_policy(input: EvaluatePolicyInput) -> PolicyEvaluation:
    try:
        document = PolicyDocument.model_validate(input.policy)
        return evaluate(document, input.facts)
    except (PolicyError, ValueError) as err:
        # A policy that does not evaluate will not evaluate on retry either.
        raise ApplicationError(
            f"policy does not evaluate: {err}", type="InvalidPolicy", non_retryable=True
        ) from None
