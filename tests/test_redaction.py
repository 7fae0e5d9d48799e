"""Personal data never reaches the logs: the masking rules, and real JSON log lines written
through structlog, the standard library and Temporal's `activity.logger`."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from temporalio import activity
from temporalio.testing import ActivityEnvironment

from core.logging import configure_logging
from core.redaction import redact, redact_text

EMAIL = "jane.doe@example.com"
CARD = "4242 4242 4242 4242"  # passes the Luhn check
PHONE = "+1 415 555 2671"
PLANTED = (EMAIL, CARD, PHONE, "4242424242424242", "415 555 2671", "jane.doe")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"from {EMAIL}.", "from j***@example.com."),
        ("JOHN_SMITH+tag@mail.example.co.uk", "J***@mail.example.co.uk"),
        (f"card {CARD} expires", "card **** **** **** 4242 expires"),
        ("card 4111-1111-1111-1111", "card **** **** **** 1111"),
        ("amex 378282246310005", "amex **** **** **** 0005"),
        (f"call {PHONE}", "call ***-***-2671"),
        ("+14155552671", "***-***-2671"),
        ("(415) 555-2671 or 415.555.2671", "***-***-2671 or ***-***-2671"),
        ("UK 020 7946 0958, mobile 07700 900123", "UK ***-***-0958, mobile ***-***-0123"),
        ("Paris 01 23 45 67 89", "Paris ***-***-6789"),
    ],
)
def test_personal_data_is_masked(text: str, expected: str) -> None:
    assert expected == redact_text(text)


@pytest.mark.parametrize(
    "text",
    [
        "order O-5004 for 129.99 USD",
        "order 4242424242424241",  # 16 digits that fail the Luhn check: an id, not a card
        "at 2026-11-25T09:30:00.123456+00:00, due 2026-11-25 12:00",
        "run 0193a4b2-7c1d-7def-8a9b-123456789012 and 12345678-1234-1234-1234-123456789012",
        "epoch 1732531200, total $1,234.56, +05:30, 3 items",
        "already masked: j***@example.com **** **** **** 4242 ***-***-2671",
    ],
)
def test_business_data_survives(text: str) -> None:
    assert text == redact_text(text)


def test_redact_walks_nested_values_and_copies() -> None:
    value = {"customer": {"emails": [EMAIL], "phones": (PHONE,)}, "amount": 129.99, "n": 5}

    redacted = redact(value)

    assert {
        "customer": {"emails": ["j***@example.com"], "phones": ("***-***-2671",)},
        "amount": 129.99,
        "n": 5,
    } == redacted
    assert [EMAIL] == value["customer"]["emails"]  # type: ignore[index]


# --- real log lines -----------------------------------------------------------------------------


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    structlog.reset_defaults()
    configure_logging("INFO", json=True)
    yield stream
    logging.getLogger().handlers = []
    structlog.reset_defaults()


def records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_clean(raw: str) -> None:
    for planted in PLANTED:
        assert planted not in raw


def test_structlog_lines_are_redacted(json_logs: io.StringIO) -> None:
    structlog.get_logger().info(
        f"customer {EMAIL} wrote",
        order_id="O-5004",
        amount="129.99",
        total=129.99,
        payment={"card": CARD, "contacts": [PHONE, {"email": EMAIL}]},
    )

    raw = json_logs.getvalue()
    assert_clean(raw)
    (line,) = records(json_logs)
    assert "customer j***@example.com wrote" == line["event"]
    assert {
        "card": "**** **** **** 4242",
        "contacts": ["***-***-2671", {"email": "j***@example.com"}],
    } == line["payment"]
    assert ("O-5004", "129.99", 129.99) == (line["order_id"], line["amount"], line["total"])


def test_stdlib_lines_and_tracebacks_are_redacted(json_logs: io.StringIO) -> None:
    log = logging.getLogger("podium.test")
    try:
        raise ValueError(f"card {CARD} declined for {EMAIL}")
    except ValueError:
        log.exception("charge failed for %s on order %s", PHONE, "O-5004")

    assert_clean(json_logs.getvalue())
    (line,) = records(json_logs)
    assert "charge failed for ***-***-2671 on order O-5004" == line["event"]
    assert "card **** **** **** 4242 declined for j***@example.com" in str(line["exception"])


@activity.defn(name="log_customer_contact")
def log_customer_contact(text: str) -> str:
    activity.logger.info("refund of 129.99 on O-5004 for %s", text)
    return text


def test_activity_logger_lines_are_redacted(json_logs: io.StringIO) -> None:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, activity_type="log_customer_contact", workflow_id="refund-7"
    )

    env.run(log_customer_contact, f"{EMAIL}, card {CARD}, phone {PHONE}")

    assert_clean(json_logs.getvalue())
    line = next(r for r in records(json_logs) if str(r["event"]).startswith("refund of"))
    assert (
        "refund of 129.99 on O-5004 for j***@example.com, card **** **** **** 4242, "
        "phone ***-***-2671"
    ) == line["event"]
    assert ("log_customer_contact", "refund-7") == (line["activity_type"], line["workflow_id"])


def test_console_lines_are_redacted_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The readable console output has no JSON step: the shared processors do the masking."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    structlog.reset_defaults()
    configure_logging("INFO", json=False)
    try:
        structlog.get_logger().info("contact", email=EMAIL, order_id="O-5004")
        ActivityEnvironment().run(log_customer_contact, f"{CARD} / {PHONE}")
    finally:
        logging.getLogger().handlers = []
        structlog.reset_defaults()

    raw = stream.getvalue()
    assert_clean(raw)
    assert "j***@example.com" in raw and "O-5004" in raw
    assert "**** **** **** 4242 / ***-***-2671" in raw
