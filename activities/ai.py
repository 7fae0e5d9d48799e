"""Model activities: triage a customer message, draft a reply, through the model gateway.

Both stay synchronous (they run on the worker's activity thread pool, as before) and hand the
model work to the `ModelGateway`, whose asyncio loop owns the pooled HTTP clients. The gateway
picks the model chain from the task and the risk level (`config/models.yaml`), falls back along
it, and writes the cost ledger; the activities turn its result into the payloads the workflows
already know, with the spend, the token counts and the models tried added.

- `triage_request`: intent through the gateway (task `intent`), sentiment and order ids from
  the embedded models. No acceptable intent -> `needs_human=True`; every model temporarily
  unavailable -> retryable `ApplicationError` with the longest `Retry-After` as
  `next_retry_delay`.
- `draft_reply`: renders the approved template (an unknown template or a bad amount fails
  without retry), then asks the gateway (task `draft`) to improve its tone. Any failure falls
  back to the template itself, which is always a correct reply.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.intelligence.embedded import EmbeddedModels
from activities.intelligence.gateway import (
    GatewayResult,
    ModelGateway,
    ModelsUnavailableError,
    record_metrics,
)
from activities.intelligence.intent import MAX_CLASSIFIED_CHARS
from activities.intelligence.replies import format_amount
from activities.intelligence.tasks import (
    DraftOutput,
    DraftRequest,
    IntentOutput,
    IntentRequest,
    Task,
    TaskRequest,
)
from activities.intelligence.text import extract_order_ids
from activities.types import (
    DraftReplyInput,
    DraftReplyResult,
    Intent,
    RiskLevel,
    TriageInput,
    TriageResult,
)

__all__ = ["DEFAULT_RISK", "IntelligenceActivities"]

DEFAULT_RISK = RiskLevel.MEDIUM
NO_MODEL = "none"


class IntelligenceActivities:
    def __init__(self, models: EmbeddedModels, gateway: ModelGateway | None = None) -> None:
        """Without a gateway: the repository's `config/models.yaml`, with no cost ledger."""
        self._models = models
        self._gateway = gateway or ModelGateway.from_file(None, models)

    def _run(
        self, task: Task, request: TaskRequest, risk: RiskLevel, case_id: str
    ) -> GatewayResult:
        meter = activity.metric_meter()
        try:
            result = self._gateway.run_blocking(
                task,
                request,
                risk=risk,
                case_id=case_id,
                workflow_id=activity.info().workflow_id,
            )
        except ModelsUnavailableError as err:
            record_metrics(meter, task, err.attempts)
            raise
        record_metrics(meter, task, result.attempts)
        return result

    @activity.defn(name="triage_request")
    def triage_request(self, input: TriageInput) -> TriageResult:
        """Intent, sentiment and order ids of a message. Blank text triages as `other`
        with confidence 0.0 without asking any model, so the workflow's confidence gate sends
        it to a person."""
        sentiment, sentiment_score = self._models.sentiment(input.text)
        order_ids = extract_order_ids(input.text)
        if not input.text.strip():
            return TriageResult(
                intent=Intent.OTHER,
                intent_confidence=0.0,
                sentiment=sentiment,
                sentiment_score=sentiment_score,
                order_ids=order_ids,
                model=self._models.intent_model,
                needs_human=True,
            )
        request = IntentRequest(text=input.text[:MAX_CLASSIFIED_CHARS])
        try:
            gateway = self._run(Task.INTENT, request, input.risk or DEFAULT_RISK, input.case_id)
        except ValueError as err:
            raise ApplicationError(str(err), type="InvalidTriageInput", non_retryable=True) from err
        output = gateway.output_as(IntentOutput)
        result = TriageResult(
            intent=output.intent if output else Intent.OTHER,
            intent_confidence=output.confidence if output else 0.0,
            sentiment=sentiment,
            sentiment_score=sentiment_score,
            order_ids=order_ids,
            model=gateway.model or NO_MODEL,
            cost_usd=gateway.cost_usd,
            tokens_in=gateway.tokens_in,
            tokens_out=gateway.tokens_out,
            needs_human=gateway.needs_human,
            attempts=gateway.attempted,
        )
        activity.logger.info(
            "triage_request.done",
            extra={
                "case_id": input.case_id,
                "intent": result.intent.value,
                "intent_confidence": round(result.intent_confidence, 3),
                "sentiment": result.sentiment.value,
                "order_ids": result.order_ids,
                "model": result.model,
                "attempts": result.attempts,
                "needs_human": result.needs_human,
                "cost_usd": result.cost_usd,
            },
        )
        return result

    @activity.defn(name="draft_reply")
    def draft_reply(self, input: DraftReplyInput) -> DraftReplyResult:
        """The reply to send: the rendered template, its tone improved by a model when the
        route has one. An unknown template or bad values fail without retry."""
        try:
            template = self._models.draft_reply(input)
        except ValueError as err:
            raise ApplicationError(
                str(err), type="InvalidReplyRequest", non_retryable=True
            ) from err
        request = DraftRequest(
            template=input.template,
            customer_name=input.customer_name,
            order_id=input.order_id,
            amount=(
                None
                if input.amount_cents is None
                else format_amount(input.amount_cents, input.currency)
            ),
            draft=template.text,
        )
        try:
            gateway = self._run(Task.DRAFT, request, input.risk or DEFAULT_RISK, input.case_id)
        except ModelsUnavailableError as err:
            # The approved template is a correct reply: send it now rather than wait for an
            # upstream to recover.
            gateway = GatewayResult(Task.DRAFT, None, None, True, err.attempts)
        output = gateway.output_as(DraftOutput)
        text, model = (output.text, gateway.model) if output else (template.text, template.model)
        result = DraftReplyResult(
            text=text,
            model=model or template.model,
            cost_usd=gateway.cost_usd,
            tokens_in=gateway.tokens_in,
            tokens_out=gateway.tokens_out,
            attempts=gateway.attempted,
        )
        activity.logger.info(
            "draft_reply.done",
            extra={
                "case_id": input.case_id,
                "template": input.template,
                "model": result.model,
                "attempts": result.attempts,
                "fell_back_to_template": output is None,
                "cost_usd": result.cost_usd,
            },
        )
        return result
