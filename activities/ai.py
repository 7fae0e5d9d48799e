"""Activities backed by the embedded models: triage a customer message, draft a reply.

Both are sync: they are CPU-bound and run on the worker's activity thread pool. The models are
loaded once in `worker.py` (`EmbeddedModels.load()`) and shared by every call.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.intelligence.embedded import EmbeddedModels
from activities.types import DraftReplyInput, DraftReplyResult, TriageInput, TriageResult

__all__ = ["IntelligenceActivities"]


class IntelligenceActivities:
    def __init__(self, models: EmbeddedModels) -> None:
        self._models = models

    @activity.defn(name="triage_request")
    def triage_request(self, input: TriageInput) -> TriageResult:
        """Intent, sentiment and order ids of a message. Blank text triages as `other`
        with confidence 0.0, so the workflow's confidence gate sends it to a person."""
        try:
            result = self._models.triage(input.text)
        except ValueError as err:
            raise ApplicationError(str(err), type="InvalidTriageInput", non_retryable=True) from err
        activity.logger.info(
            "triage_request.done",
            extra={
                "case_id": input.case_id,
                "intent": result.intent.value,
                "intent_confidence": round(result.intent_confidence, 3),
                "sentiment": result.sentiment.value,
                "order_ids": result.order_ids,
                "model": result.model,
            },
        )
        return result

    @activity.defn(name="draft_reply")
    def draft_reply(self, input: DraftReplyInput) -> DraftReplyResult:
        """Render a reply template; an unknown template or bad values fail without retry."""
        try:
            result = self._models.draft_reply(input)
        except ValueError as err:
            raise ApplicationError(
                str(err), type="InvalidReplyRequest", non_retryable=True
            ) from err
        activity.logger.info(
            "draft_reply.done",
            extra={"case_id": input.case_id, "template": input.template, "model": result.model},
        )
        return result
