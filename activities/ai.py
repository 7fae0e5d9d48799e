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
- `read_document`: loads a stored image by id (the bytes never enter history) and reads it
  with the embedded OCR (`ReceiptReader`, one per worker, shared by the activity threads): the
  order id, total, currency and date, and at most 2,000 characters of its text. The ledger
  records the read as task `ocr` (free). An unknown id or bytes that are not a readable image
  fail without retry.
- `extract_fields`: structured fields of a text through the gateway (task `extract`, the
  embedded rules by default).
"""

from __future__ import annotations

import threading
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.documents import DocumentStore
from activities.intelligence.embedded import EmbeddedModels
from activities.intelligence.extract import EXTRACTED_FIELD_NAMES, MAX_EXTRACTED_CHARS
from activities.intelligence.gateway import (
    GatewayResult,
    ModelGateway,
    ModelsUnavailableError,
    record_metrics,
)
from activities.intelligence.intent import MAX_CLASSIFIED_CHARS
from activities.intelligence.ocr import ReceiptReader
from activities.intelligence.replies import format_amount
from activities.intelligence.tasks import (
    DraftOutput,
    DraftRequest,
    ExtractOutput,
    ExtractRequest,
    IntentOutput,
    IntentRequest,
    Task,
    TaskRequest,
)
from activities.intelligence.text import extract_order_ids
from activities.types import (
    DraftReplyInput,
    DraftReplyResult,
    ExtractFieldsInput,
    ExtractFieldsResult,
    Intent,
    ReadDocumentInput,
    ReadDocumentResult,
    RiskLevel,
    TriageInput,
    TriageResult,
)

__all__ = ["DEFAULT_RISK", "OCR_TASK", "IntelligenceActivities"]

DEFAULT_RISK = RiskLevel.MEDIUM
NO_MODEL = "none"
# The ledger's and the metrics' task name for reading an image (not a gateway route).
OCR_TASK = "ocr"


class IntelligenceActivities:
    def __init__(
        self,
        models: EmbeddedModels,
        gateway: ModelGateway | None = None,
        *,
        documents: DocumentStore | None = None,
        reader: ReceiptReader | None = None,
    ) -> None:
        """Without a gateway: the repository's `config/models.yaml`, with no cost ledger.
        Without `documents`, `read_document` refuses; without a `reader`, one is built on the
        first read (it loads its ONNX models once, about a second) and shared from then on."""
        self._models = models
        self._gateway = gateway or ModelGateway.from_file(None, models)
        self._documents = documents
        self._reader = reader
        self._reader_lock = threading.Lock()

    def _receipt_reader(self) -> ReceiptReader:
        with self._reader_lock:
            if self._reader is None:
                self._reader = ReceiptReader()
            return self._reader

    def _run(
        self,
        task: Task,
        request: TaskRequest,
        risk: RiskLevel,
        case_id: str,
        chain: list[str] | None = None,
    ) -> GatewayResult:
        meter = activity.metric_meter()
        try:
            result = self._gateway.run_blocking(
                task,
                request,
                risk=risk,
                case_id=case_id,
                workflow_id=activity.info().workflow_id,
                chain_override=chain,
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
            gateway = self._run(
                Task.INTENT, request, input.risk or DEFAULT_RISK, input.case_id, input.model_chain
            )
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
            gateway = self._run(
                Task.DRAFT, request, input.risk or DEFAULT_RISK, input.case_id, input.model_chain
            )
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

    @activity.defn(name="read_document")
    def read_document(self, input: ReadDocumentInput) -> ReadDocumentResult:
        """The fields of a stored receipt or invoice image, read by OCR. An unknown document or
        one that is not a readable image fails without retry."""
        if self._documents is None:
            raise ApplicationError(
                "this worker has no document store", type="NoDocumentStore", non_retryable=True
            )
        stored = self._documents.get(input.document_id)
        if stored is None:
            raise ApplicationError(
                f"no document with id '{input.document_id}'",
                type="DocumentNotFound",
                non_retryable=True,
            )
        reader = self._receipt_reader()
        started = time.perf_counter()
        try:
            document = reader.read(stored.data, today=input.today)
        except ValueError as err:
            raise ApplicationError(str(err), type="UnreadableDocument", non_retryable=True) from err
        attempt = self._gateway.record_local_blocking(
            OCR_TASK,
            document.model,
            latency_ms=round((time.perf_counter() - started) * 1000),
            case_id=input.case_id,
            workflow_id=activity.info().workflow_id,
        )
        record_metrics(activity.metric_meter(), OCR_TASK, [attempt])
        limit = ReadDocumentResult.MAX_TEXT_CHARS
        result = ReadDocumentResult(
            document_id=stored.document_id,
            content_type=stored.content_type,
            size_bytes=stored.size,
            text=document.text[:limit],
            text_truncated=len(document.text) > limit,
            line_count=len(document.lines),
            order_id=document.order_id,
            total_cents=document.total_cents,
            currency=document.currency,
            document_date=document.document_date,
            confidence=document.confidence,
            model=document.model,
        )
        activity.logger.info(
            "read_document.done",
            extra={
                "case_id": input.case_id,
                "document_id": input.document_id,
                "size_bytes": stored.size,
                "order_id": result.order_id,
                "total_cents": result.total_cents,
                "currency": result.currency,
                "confidence": result.confidence,
                "latency_ms": attempt.latency_ms,
            },
        )
        return result

    @activity.defn(name="extract_fields")
    def extract_fields(self, input: ExtractFieldsInput) -> ExtractFieldsResult:
        """Order id, amount, dates, employee, system and e-mail of a text, through the gateway
        (task `extract`). An unknown expected field fails without retry."""
        unknown = sorted(set(input.expected or ()) - set(EXTRACTED_FIELD_NAMES))
        if unknown:
            raise ApplicationError(
                f"unknown expected fields: {', '.join(unknown)}; "
                f"known: {', '.join(EXTRACTED_FIELD_NAMES)}",
                type="InvalidExtractionInput",
                non_retryable=True,
            )
        request = ExtractRequest(
            text=input.text[:MAX_EXTRACTED_CHARS], today=input.today, expected=input.expected
        )
        gateway = self._run(Task.EXTRACT, request, input.risk or DEFAULT_RISK, input.case_id)
        output = gateway.output_as(ExtractOutput)
        spend = {
            "cost_usd": gateway.cost_usd,
            "tokens_in": gateway.tokens_in,
            "tokens_out": gateway.tokens_out,
            "needs_human": gateway.needs_human,
            "attempts": gateway.attempted,
        }
        if output is None:
            return ExtractFieldsResult(confidence=0.0, model=NO_MODEL, **spend)
        return ExtractFieldsResult(**output.model_dump(), model=gateway.model or NO_MODEL, **spend)
