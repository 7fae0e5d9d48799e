# STYLE.md asks for `assert expected == actual`, which ruff's SIM300 calls a Yoda condition.
"""Receipt uploads through the HTTP API, against the real Temporal dev server.

A bad attachment (not base64, not a PNG/JPEG by its bytes, over 10 MB, ...) is refused with a
422 problem while the request is parsed: no document is stored and no case starts. A good one is
stored before the case starts and the case carries only its id: the happy path runs the real
refund workflow with the real OCR on a 2 MB image and checks that its history is a fraction of
the image's size.
"""

from __future__ import annotations

import base64
import hashlib
import random
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from core.db import Document, make_engine
from core.settings import Settings
from starter.documents import MAX_ATTACHMENT_BYTES
from tests.fixtures.make_receipts import FIXTURES_DIR
from tests.helpers import (
    document_activities,
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seed_orders,
    seeded_engine,
)
from tests.test_api import api, assert_not_started, assert_problem, make_settings, new_key
from workflows.refund.types import RefundCaseInput, RefundCaseResult, RefundOutcome

pytestmark = pytest.mark.e2e

CAFE = FIXTURES_DIR / "cafe_receipt_gbp.png"  # order O-7781, GBP 20.70
PNG = CAFE.read_bytes()


def encoded(data: bytes, content_type: str = "image/png") -> dict[str, str]:
    return {"content_type": content_type, "data_base64": base64.b64encode(data).decode()}


def case_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": "email",
        "customer_id": "C-1001",
        "message": "Please refund my breakfast, the receipt is attached.",
    }
    body.update(overrides)
    return body


def padded_png(path: Path, extra_bytes: int) -> bytes:
    """The same picture with `extra_bytes` of noise in a private ancillary chunk, which image
    readers skip: a large upload that OCR reads like the original."""
    noise = random.Random(7).randbytes(extra_bytes)
    info = PngInfo()
    info.add(b"pdDg", noise)
    buffer = BytesIO()
    with Image.open(path) as image:
        image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def stored_documents(settings: Settings) -> list[Document]:
    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(Document)))
    finally:
        engine.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(data_dir=tmp_path)


@pytest.fixture
async def idle(
    dev_env: WorkflowEnvironment, settings: Settings
) -> AsyncIterator[httpx.AsyncClient]:
    """The API on a fresh task queue that no worker polls, its database under tmp_path."""
    async with api(dev_env, settings) as http:
        yield http


# --- refused attachments ------------------------------------------------------------------------


def too_large() -> dict[str, str]:
    """A PNG signature and 10 MB of zeros: one byte over the limit."""
    return encoded(b"\x89PNG\r\n\x1a\n" + bytes(MAX_ATTACHMENT_BYTES - 7))


@pytest.mark.parametrize(
    ("attachment", "field", "message"),
    [
        (
            {"content_type": "image/png", "data_base64": "not base64 at all!"},
            "attachment.data_base64",
            "not valid base64",
        ),
        (encoded(b"%PDF-1.7 a document"), "attachment.data_base64", "not a PNG or JPEG image"),
        (encoded(b"GIF89a" + bytes(64)), "attachment.data_base64", "not a PNG or JPEG image"),
        (encoded(PNG, "image/jpeg"), "attachment.data_base64", "is image/png, not image/jpeg"),
        (too_large, "attachment.data_base64", "the limit is 10 MB"),
        (encoded(PNG, "image/gif"), "attachment.content_type", "image/png"),
        ({"content_type": "image/png", "data_base64": ""}, "attachment.data_base64", "at least"),
    ],
    ids=["bad-base64", "pdf", "gif", "wrong-type", "too-large", "gif-type", "empty"],
)
async def test_a_bad_attachment_is_422_and_nothing_is_stored_or_started(
    dev_env: WorkflowEnvironment,
    idle: httpx.AsyncClient,
    settings: Settings,
    attachment: dict[str, str] | Callable[[], dict[str, str]],
    field: str,
    message: str,
) -> None:
    key = new_key()
    response = await idle.post(
        "/cases/refund",
        json=case_body(attachment=attachment() if callable(attachment) else attachment),
        headers={"Idempotency-Key": key},
    )
    problem = assert_problem(response, 422)
    [error] = problem["errors"]
    assert (field, "body") == (error["field"], error["location"])
    assert message in error["message"]
    assert len(response.content) < 2_000  # the upload is not echoed back
    await assert_not_started(dev_env, f"refund-{key}")
    # Refused while parsing: the API never even opened its database.
    assert not (settings.data_dir / "podium.db").exists()


async def test_attachment_and_attachment_id_together_are_refused(
    dev_env: WorkflowEnvironment, idle: httpx.AsyncClient
) -> None:
    key = new_key()
    body = case_body(attachment=encoded(PNG), attachment_id=f"doc-{uuid.uuid4().hex}")
    response = await idle.post("/cases/refund", json=body, headers={"Idempotency-Key": key})
    problem = assert_problem(response, 422)
    assert "either 'attachment' or 'attachment_id'" in problem["detail"]
    await assert_not_started(dev_env, f"refund-{key}")


async def test_an_unknown_attachment_id_is_refused(
    dev_env: WorkflowEnvironment, idle: httpx.AsyncClient
) -> None:
    key = new_key()
    missing = f"doc-{uuid.uuid4().hex}"
    response = await idle.post(
        "/cases/refund", json=case_body(attachment_id=missing), headers={"Idempotency-Key": key}
    )
    problem = assert_problem(response, 422)
    assert [("attachment_id", f"no document with id '{missing}'")] == [
        (error["field"], error["message"]) for error in problem["errors"]
    ]
    await assert_not_started(dev_env, f"refund-{key}")


async def test_documents_endpoint_stores_once_per_content(
    idle: httpx.AsyncClient, settings: Settings
) -> None:
    first = await idle.post("/documents", json=encoded(PNG))
    again = await idle.post("/documents", json=encoded(PNG))
    bad = await idle.post("/documents", json=encoded(b"plain text"))

    assert 201 == first.status_code, first.text
    assert 200 == again.status_code
    document = first.json()
    assert document["document_id"] == again.json()["document_id"]
    assert document["document_id"].startswith("doc-")
    assert (hashlib.sha256(PNG).hexdigest(), "image/png", len(PNG), True) == (
        document["sha256"],
        document["content_type"],
        document["size_bytes"],
        document["created"],
    )
    assert_problem(bad, 422)
    [row] = stored_documents(settings)
    assert (document["document_id"], PNG) == (row.id, row.data)


async def test_a_case_may_refer_to_an_uploaded_document(
    dev_env: WorkflowEnvironment, idle: httpx.AsyncClient
) -> None:
    document_id = (await idle.post("/documents", json=encoded(PNG))).json()["document_id"]
    response = await idle.post("/cases/refund", json=case_body(attachment_id=document_id))
    assert 201 == response.status_code, response.text

    history = await dev_env.client.get_workflow_handle(response.json()["case_id"]).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [case_input] = await dev_env.client.data_converter.decode(
        started.input.payloads, [RefundCaseInput]
    )
    assert document_id == case_input.attachment_id


# --- the happy path -----------------------------------------------------------------------------


async def test_receipt_through_the_api_resolves_the_case_from_its_id_alone(
    dev_env: WorkflowEnvironment, tmp_path: Path, settings: Settings
) -> None:
    engine = seeded_engine(tmp_path)  # the database the API's settings point at
    seed_orders(engine, datetime.now(UTC), {"O-7781": ("C-1001", 2_070, "GBP")})
    image = padded_png(CAFE, 2_000_000)
    with (
        ThreadPoolExecutor(max_workers=4) as executor,
        document_activities(engine) as documents,
    ):
        worker = make_worker(
            dev_env.client,
            [*real_system_activities(engine), *documents, fake_triage, fake_draft],
            executor,
            task_queue=settings.task_queue,
        )
        async with worker, api(dev_env, settings) as http:
            created = await http.post(
                "/cases/refund",
                json=case_body(attachment=encoded(image)),
                headers={"Idempotency-Key": (key := new_key())},
            )
            assert 201 == created.status_code, created.text
            handle = dev_env.client.get_workflow_handle(
                created.json()["case_id"], result_type=RefundCaseResult
            )
            result = await handle.result()
            # A retry of the same request finds the same case (the same bytes, the same id).
            again = await http.post(
                "/cases/refund",
                json=case_body(attachment=encoded(image)),
                headers={"Idempotency-Key": key},
            )
            assert 200 == again.status_code, again.text

    assert RefundOutcome.AUTO_RESOLVED == result.outcome, result.reasons
    assert 2_070 == result.amount_cents
    [document] = stored_documents(settings)
    assert hashlib.sha256(image).hexdigest() == document.sha256
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [case_input] = await dev_env.client.data_converter.decode(
        started.input.payloads, [RefundCaseInput]
    )
    assert document.id == case_input.attachment_id
    assert started.input.ByteSize() < 4_000
    # The whole case, every event, is a small fraction of the image it is about.
    assert len(history.to_json()) < len(image) // 10
    engine.dispose()
