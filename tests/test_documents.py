# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""The document store, the `read_document` and `extract_fields` activities, and the gateway's
`extract` / `summary` tasks: real embedded models, a temporary SQLite database, no server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.ai import IntelligenceActivities
from activities.documents import DocumentStore, StoredDocument
from activities.intelligence.config import load_models_config, load_prompts
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.ledger import ModelLedger
from activities.intelligence.tasks import (
    ExtractOutput,
    ExtractRequest,
    SummaryOutput,
    SummaryRequest,
    Task,
)
from activities.types import ExtractFieldsInput, ReadDocumentInput, ReadDocumentResult, RiskLevel
from core.db import create_tables, make_engine
from starter.documents import MAX_ATTACHMENT_BYTES, AttachmentUpload
from tests.fixtures.make_receipts import FIXTURES_DIR
from tests.helpers import _embedded
from tests.postgres import scratch_database
from workflows.contracts.documents import sniff_image_type

TODAY = date(2026, 11, 25)
GROCERY = FIXTURES_DIR / "grocery_receipt.png"  # order O-5004, $25.24, 20 Nov 2026


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'podium.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def activities(engine: Engine) -> Iterator[IntelligenceActivities]:
    models, reader = _embedded()
    gateway = ModelGateway.from_file(None, models, ledger=ModelLedger(engine))
    yield IntelligenceActivities(models, gateway, documents=DocumentStore(engine), reader=reader)
    gateway.close()


def failure(call: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        call()
    return caught.value


# --- the store ----------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The documents table on each backend (PostgreSQL: `bytea`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'podium.db'}"
        context: Any = contextlib.nullcontext(url)
    else:
        context = scratch_database(request.getfixturevalue("postgres_url"))
    with context as url:
        engine = make_engine(url)
        create_tables(engine)
        yield engine
        engine.dispose()


def test_the_same_bytes_are_stored_once(any_engine: Engine) -> None:
    store = DocumentStore(any_engine)
    image = GROCERY.read_bytes()
    first = store.put(image, "image/png")
    again = store.put(image, "image/png")
    other = store.put(image + b"\x00", "image/png")

    assert (True, False, True) == (first.created, again.created, other.created)
    assert first.document_id == again.document_id != other.document_id
    assert (len(image), "image/png") == (first.size, first.content_type)
    stored = store.get(first.document_id)
    assert stored is not None and image == stored.data
    assert store.exists(first.document_id)
    assert None is store.get("doc-" + "0" * 32)
    assert not store.exists("doc-" + "0" * 32)


def test_a_concurrent_upload_of_the_same_bytes_gets_the_first_id(
    any_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DocumentStore(any_engine)
    image = GROCERY.read_bytes()
    first = store.put(image, "image/png")
    # The second upload looked before the first had committed: its insert hits the unique key.
    real, calls = store._by_sha256, []

    def stale_first(digest: str) -> StoredDocument | None:
        calls.append(digest)
        return None if len(calls) == 1 else real(digest)

    monkeypatch.setattr(store, "_by_sha256", stale_first)

    second = store.put(image, "image/png")

    assert (first.document_id, False) == (second.document_id, second.created)
    assert 2 == len(calls)  # the stale look, then the read-back after the conflict


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (GROCERY.read_bytes(), "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a", None),
        (b"%PDF-1.7", None),
        (b"", None),
    ],
    ids=["png", "jpeg", "gif", "pdf", "empty"],
)
def test_image_type_comes_from_the_bytes(data: bytes, expected: str | None) -> None:
    assert expected == sniff_image_type(data)


# --- read_document ------------------------------------------------------------------------------


def test_read_document_reads_the_receipt_and_records_a_free_ocr_call(
    engine: Engine, activities: IntelligenceActivities
) -> None:
    document_id = DocumentStore(engine).put(GROCERY.read_bytes(), "image/png").document_id

    result = ActivityEnvironment().run(
        activities.read_document,
        ReadDocumentInput(case_id="case-1", document_id=document_id, today=TODAY),
    )

    assert ("O-5004", 2_524, "USD", date(2026, 11, 20)) == (
        result.order_id,
        result.total_cents,
        result.currency,
        result.document_date,
    )
    assert (document_id, "image/png", GROCERY.stat().st_size) == (
        result.document_id,
        result.content_type,
        result.size_bytes,
    )
    assert result.line_count > 5 and "TOTAL" in result.text.upper()
    assert not result.text_truncated and len(result.text) <= ReadDocumentResult.MAX_TEXT_CHARS
    assert result.model.startswith("embedded:rapidocr-onnxruntime@")
    assert (0.0, 0, 0) == (result.cost_usd, result.tokens_in, result.tokens_out)
    [call] = ModelLedger(engine).calls("case-1")
    assert ("ocr", "embedded", result.model, "ok", 0) == (
        call.task,
        call.provider,
        call.model,
        call.outcome,
        call.cost_micro_usd,
    )


def test_read_document_refuses_unknown_and_unreadable_documents(
    engine: Engine, activities: IntelligenceActivities
) -> None:
    env = ActivityEnvironment()
    missing = failure(
        lambda: env.run(
            activities.read_document, ReadDocumentInput(case_id="c", document_id="doc-nothing")
        )
    )
    assert ("DocumentNotFound", True) == (missing.type, missing.non_retryable)

    broken = DocumentStore(engine).put(b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png")
    unreadable = failure(
        lambda: env.run(
            activities.read_document,
            ReadDocumentInput(case_id="c", document_id=broken.document_id),
        )
    )
    assert ("UnreadableDocument", True) == (unreadable.type, unreadable.non_retryable)


# --- extract_fields and the gateway's tasks -----------------------------------------------------


def test_extract_fields_goes_through_the_gateway(
    engine: Engine, activities: IntelligenceActivities
) -> None:
    result = ActivityEnvironment().run(
        activities.extract_fields,
        ExtractFieldsInput(
            case_id="case-2",
            text="Order O-5004 arrived yesterday and cost $25.24; refund please.",
            expected=["order_id", "amount_cents"],
            today=TODAY,
        ),
    )

    assert ("O-5004", 2_524, "USD", [date(2026, 11, 24)]) == (
        result.order_id,
        result.amount_cents,
        result.currency,
        result.dates,
    )
    assert 1.0 == result.confidence
    assert result.model.startswith("embedded:rules-extract@")
    assert (["embedded"], False, 0.0) == (result.attempts, result.needs_human, result.cost_usd)
    assert [("extract", "ok")] == [(c.task, c.outcome) for c in ModelLedger(engine).calls("case-2")]

    bad = failure(
        lambda: ActivityEnvironment().run(
            activities.extract_fields,
            ExtractFieldsInput(case_id="c", text="x", expected=["shoe_size"]),
        )
    )
    assert ("InvalidExtractionInput", True) == (bad.type, bad.non_retryable)


def test_summary_task_runs_on_the_embedded_model() -> None:
    models, _ = _embedded()
    gateway = ModelGateway.from_file(None, models)
    try:
        result = gateway.run_blocking(
            Task.SUMMARY,
            SummaryRequest(
                text="Hello team. My laptop screen is cracked since Monday. "
                "I need a replacement before the audit on Friday. Thanks, Sam.",
                max_sentences=1,
            ),
            risk=RiskLevel.LOW,
        )
        extracted = gateway.run_blocking(
            Task.EXTRACT, ExtractRequest(text="refund O-7781 for 12 EUR"), risk=RiskLevel.HIGH
        )
    finally:
        gateway.close()
    summary = result.output_as(SummaryOutput)
    assert summary is not None and 1 == len(summary.sentences)
    assert "laptop" in summary.text or "replacement" in summary.text
    fields = extracted.output_as(ExtractOutput)
    assert fields is not None and ("O-7781", 1_200, "EUR") == (
        fields.order_id,
        fields.amount_cents,
        fields.currency,
    )


def test_models_files_without_the_new_tasks_route_them_to_their_embedded_model(
    tmp_path: Path,
) -> None:
    document = {
        "version": 1,
        "models": {
            "local": {"kind": "embedded"},
            "small": {
                "kind": "openai_compatible",
                "base_url": "https://llm.example/v1",
                "model": "small-model",
                "api_key_env": "PODIUM_TEST_KEY",
            },
        },
        "tasks": {
            "intent": {"routes": {level.value: ["small", "local"] for level in RiskLevel}},
            "sentiment": {"routes": {level.value: ["local"] for level in RiskLevel}},
            "draft": {"routes": {level.value: ["local"] for level in RiskLevel}},
        },
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(document))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "intent.md").write_text("classify")

    config = load_models_config(path)

    assert {level: ["local"] for level in RiskLevel} == config.tasks.extract.routes
    assert {level: ["local"] for level in RiskLevel} == config.tasks.summary.routes
    # Only tasks an LLM may answer need a prompt file.
    assert [Task.INTENT] == list(load_prompts(config, path))


# --- the API's upload model ---------------------------------------------------------------------


def test_an_upload_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    signature = b"\x89PNG\r\n\x1a\n"
    at_limit = signature + bytes(MAX_ATTACHMENT_BYTES - len(signature))
    # Line-wrapped base64 (MIME style) is accepted too.
    upload = AttachmentUpload(
        content_type="image/png", data_base64=base64.encodebytes(at_limit).decode()
    )
    assert at_limit == upload.data
    assert hashlib.sha256(at_limit).hexdigest() == upload.sha256()
    with pytest.raises(ValidationError, match="the limit is 10 MB"):
        AttachmentUpload(
            content_type="image/png", data_base64=base64.b64encode(at_limit + b"\0").decode()
        )
