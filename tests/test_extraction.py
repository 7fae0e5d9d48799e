"""Unit tests for the embedded field extraction, summaries and receipt OCR (no server needed).

Field extraction is measured on the labelled messages in `datasets/extraction/`; OCR reads the
committed receipt images in `tests/fixtures/` (rendered by `tests/fixtures/make_receipts.py`).
Run with `-s` to see the measured accuracy and the OCR time per receipt.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from activities.intelligence import ocr
from activities.intelligence.extract import (
    EXTRACTED_FIELD_NAMES,
    SYSTEMS_FILE,
    extract_fields,
    extraction_model_name,
    find_amounts,
    find_dates,
)
from activities.intelligence.ocr import MAX_IMAGE_BYTES, ReceiptReader
from activities.intelligence.schemas import ExtractedFields, OcrDocument
from activities.intelligence.summarize import RegexTokenizer, summarise
from tests.fixtures.make_receipts import RECEIPTS, Receipt

DATASETS_DIR = Path(__file__).resolve().parents[1] / "datasets" / "extraction"
TODAY = date(2026, 11, 25)  # a Wednesday

# Measured per-field accuracy (order_id, amount_cents, currency, dates, employee, system_name,
# email): 1.000 on every field of fields.jsonl (70 messages, written with the rules) and
# 1.000/0.989/0.989/0.978/0.989/1.000/1.000 on heldout.jsonl (90 messages; the last 30 were
# never used to change a rule). The thresholds sit a little under those figures.
MIN_ACCURACY = {"fields.jsonl": 0.97, "heldout.jsonl": 0.95}
MAX_FIXTURE_BYTES = 100 * 1024


# --- Labelled messages --------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    text: str
    today: date
    expected: dict[str, Any]


def load_labelled(name: str) -> list[Labelled]:
    rows: list[Labelled] = []
    with (DATASETS_DIR / name).open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                row = json.loads(line)
                rows.append(
                    Labelled(row["text"], date.fromisoformat(row["today"]), row["expected"])
                )
    return rows


def expected_value(example: Labelled, field: str) -> Any:
    value = example.expected.get(field, [] if field == "dates" else None)
    return [date.fromisoformat(day) for day in value] if field == "dates" else value


@pytest.mark.parametrize("name", sorted(MIN_ACCURACY))
def test_labelled_files_are_well_formed(name: str) -> None:
    examples = load_labelled(name)
    assert len(examples) >= 60
    for example in examples:
        assert set(example.expected) <= set(EXTRACTED_FIELD_NAMES), example.text
        ExtractedFields(
            **{field: expected_value(example, field) for field in EXTRACTED_FIELD_NAMES},
            confidence=1.0,
            model="label",
        )


def test_no_message_is_in_both_labelled_files() -> None:
    first = {example.text.lower() for example in load_labelled("fields.jsonl")}
    second = {example.text.lower() for example in load_labelled("heldout.jsonl")}
    assert set() == first & second


@pytest.mark.parametrize("name", sorted(MIN_ACCURACY))
def test_per_field_accuracy(name: str) -> None:
    examples = load_labelled(name)
    correct = dict.fromkeys(EXTRACTED_FIELD_NAMES, 0)
    errors: list[str] = []
    for example in examples:
        result = extract_fields(example.text, today=example.today)
        for field in EXTRACTED_FIELD_NAMES:
            if expected_value(example, field) == getattr(result, field):
                correct[field] += 1
            else:
                errors.append(f"{field}: {example.text!r} -> {getattr(result, field)!r}")
    accuracy = {field: count / len(examples) for field, count in correct.items()}
    print(f"\n{name}: {len(examples)} messages")
    for field, value in accuracy.items():
        print(f"  {field:12} {value:.3f}")
    for error in errors:
        print(f"  miss {error}")
    assert all(value >= MIN_ACCURACY[name] for value in accuracy.values()), accuracy


# --- Order ids, amounts, dates ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I ordered 3 items in 2024",
        "I want to order 2500 pens for the office",
        "Can you reset MFA on my Okta account? employee #40021",
        "Please set up an O365 mailbox for me",
        "I paid $120 on 2026-11-20",
        "call me on 555-1234",
    ],
)
def test_no_order_id(text: str) -> None:
    assert None is extract_fields(text, today=TODAY).order_id


@pytest.mark.parametrize(
    ("text", "cents", "currency"),
    [
        ("$129.99", 12999, "USD"),
        ("129.99 USD", 12999, "USD"),
        ("USD 1,299", 129900, "USD"),
        ("€45", 4500, "EUR"),
        ("45 euros", 4500, "EUR"),
        ("$1,299.99", 129999, "USD"),
        ("1.299,00 EUR", 129900, "EUR"),
        ("45,50 €", 4550, "EUR"),
        ("1\u00a0299,00 €", 129900, "EUR"),
        ("12.5 EUR", 1250, "EUR"),
        ("US$ 310.20", 31020, "USD"),
        ("CA$20", 2000, "CAD"),
        ("£0.99", 99, "GBP"),
        ("35 quid", 3500, "GBP"),
        ("¥3,000", 300000, "JPY"),
        ("CHF 120", 12000, "CHF"),
        ("60 bucks", 6000, "USD"),
        ("a refund of -$20.00", 2000, "USD"),
    ],
)
def test_money_formats(text: str, cents: int, currency: str) -> None:
    result = extract_fields(f"I was charged {text} for it", today=TODAY)
    assert (cents, currency) == (result.amount_cents, result.currency)


@pytest.mark.parametrize(
    "text",
    [
        "5 pounds of flour",
        "I ordered 3 items in 2024",
        "the 15% discount",
        "order #5004 is late",
        "order 1200.50 was the total",
        "3 x 500 ml bottles",
        "version 2.5 of the app",
    ],
)
def test_numbers_that_are_not_money(text: str) -> None:
    assert [] == find_amounts(text)


def test_bare_receipt_amounts_only_when_asked() -> None:
    assert [] == find_amounts("TOTAL 25.24")
    assert [2524] == [money.cents for money in find_amounts("TOTAL 25.24", bare=True)]
    assert [] == find_amounts("Service 12.50%", bare=True)


def test_different_amounts_keep_the_first_and_lower_the_confidence() -> None:
    one = extract_fields("You charged me $29 for it", today=TODAY)
    two = extract_fields("The item cost $19 but you charged $29", today=TODAY)
    same = extract_fields("I was charged twice: $25.24 and $25.24", today=TODAY)
    assert (1900, "USD") == (two.amount_cents, two.currency)
    assert 1.0 == one.confidence == same.confidence
    assert 0.5 == two.confidence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20", [date(2026, 11, 20)]),
        ("20/11/2026", [date(2026, 11, 20)]),
        ("11/20/2026", [date(2026, 11, 20)]),
        ("20.11.2026", [date(2026, 11, 20)]),
        ("20/11/26", [date(2026, 11, 20)]),
        ("Nov 20", [date(2026, 11, 20)]),
        ("November 20, 2026", [date(2026, 11, 20)]),
        ("20th of November 2026", [date(2026, 11, 20)]),
        ("Dec 3", [date(2026, 12, 3)]),
        ("January 5", [date(2027, 1, 5)]),
        ("yesterday", [date(2026, 11, 24)]),
        ("the day before yesterday", [date(2026, 11, 23)]),
        ("tomorrow", [date(2026, 11, 26)]),
        ("last Tuesday", [date(2026, 11, 24)]),
        ("last Wednesday", [date(2026, 11, 18)]),
        ("since Friday", [date(2026, 11, 20)]),
        ("next Friday", [date(2026, 11, 27)]),
        ("3 days ago", [date(2026, 11, 22)]),
        ("a week ago", [date(2026, 11, 18)]),
        ("Monday the 16th", [date(2026, 11, 16)]),
        ("on 2026-11-01 and again on 2026-11-15", [date(2026, 11, 1), date(2026, 11, 15)]),
        ("we may 2 weeks", []),
        ("in March 2026", []),
        ("5-7 business days", []),
        ("version 1.2.3", []),
        ("2026-02-30", []),
    ],
)
def test_dates(text: str, expected: list[date]) -> None:
    assert expected == extract_fields(f"It was {text}.", today=TODAY).dates


def test_numeric_date_read_both_ways_is_the_nearest_and_ambiguous() -> None:
    # 11 Feb or 2 Nov 2026: on 25 Nov 2026 the customer means 2 Nov.
    [found] = find_dates("refund promised on 11/02/2026", today=TODAY)
    assert (date(2026, 11, 2), True) == (found.value, found.ambiguous)
    assert 0.5 == extract_fields("refund promised on 11/02/2026", today=TODAY).confidence


# --- People, systems, e-mail --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "employee", "system"),
    [
        ("Please create a Jira account for employee id E-1234", "E-1234", "Jira"),
        ("i need access to Salesforce for Jane Smith", "Jane Smith", "Salesforce"),
        ("Jenkins access for Tom Jenkins please", "Tom Jenkins", "Jenkins"),
        ("access for Tom Jenkins please", "Tom Jenkins", None),
        ("I need access for Google Drive", None, "Google Drive"),
        ("set up O365 for new starter Olivia Brown", "Olivia Brown", "Microsoft 365"),
        ("I bought this for John Smith and it broke", None, None),
        ("My name is Robert Green and my parcel never came", None, None),
        ("Hello, this is Karen Li. I can't log in to Workday.", "Karen Li", "Workday"),
        ("The box arrived damaged", None, None),
        ("Please share the Box folder with legal", None, "Box"),
    ],
)
def test_employee_and_system(text: str, employee: str | None, system: str | None) -> None:
    result = extract_fields(text, today=TODAY)
    assert (employee, system) == (result.employee, result.system_name)


def test_every_listed_system_is_found_by_its_own_name() -> None:
    for line in SYSTEMS_FILE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            canonical = line.split("|")[0].strip().lstrip("=")
            assert canonical == extract_fields(f"I need {canonical} access").system_name


def test_email_is_kept_as_written() -> None:
    result = extract_fields("my email is BOB.SMITH@Example.org, thanks", today=TODAY)
    assert "BOB.SMITH@Example.org" == result.email


# --- Confidence and model -----------------------------------------------------------------------


def test_confidence_over_expected_fields() -> None:
    text = "Please refund order O-5004"
    assert 1.0 == extract_fields(text, today=TODAY).confidence
    assert (
        0.5 == extract_fields(text, today=TODAY, expected=["order_id", "amount_cents"]).confidence
    )
    assert 0.0 == extract_fields("hello there", today=TODAY).confidence
    with pytest.raises(ValueError, match="unknown expected fields: amount"):
        extract_fields(text, expected=["amount"])


def test_model_name_is_fingerprinted() -> None:
    name = extraction_model_name()
    assert name.startswith("embedded:rules-extract@")
    assert name == extract_fields("hi").model


def test_another_systems_list(tmp_path: Path) -> None:
    systems = tmp_path / "systems.txt"
    systems.write_text("# ours\nPodium Console | PC\n=Hub\n", encoding="utf-8")
    result = extract_fields("I need PC access, not the hub", systems_file=systems)
    assert "Podium Console" == result.system_name
    assert None is extract_fields("the hub is down", systems_file=systems).system_name
    assert extraction_model_name(systems) == result.model != extraction_model_name()


def test_extraction_is_thread_safe() -> None:
    texts = [example.text for example in load_labelled("heldout.jsonl")]
    expected = [extract_fields(text, today=TODAY) for text in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert expected == list(pool.map(lambda t: extract_fields(t, today=TODAY), texts))


# --- Summaries ----------------------------------------------------------------------------------

COMPLAINT = """Hi team,

I hope you are well. I ordered a blue rain jacket (order O-5004) on November 3 and it arrived
yesterday with a torn sleeve and a broken zip. This is the second jacket from you that arrived
damaged, and the first replacement took three weeks. I would like a full refund of $129.99 to
my original card rather than another replacement. The weather here has been lovely this week,
by the way.

Thanks,
Jane Smith
Sent from my iPhone"""

EMPLOYEE_REQUEST = (
    "Hello IT, our new hire Priya Patel starts on Monday 30 November in the finance team. "
    "She will need a laptop, a Salesforce licence and VPN access before her first day. "
    "Her manager is Tom Baker, who has approved the request. "
    "We also need her added to the finance Slack channel. "
    "Let me know if you need anything else from me. Have a great weekend!"
)


def test_summary_keeps_the_facts_and_the_request() -> None:
    summary = summarise(COMPLAINT)
    assert [
        "I ordered a blue rain jacket (order O-5004) on November 3 and it arrived yesterday "
        "with a torn sleeve and a broken zip.",
        "I would like a full refund of $129.99 to my original card rather than another "
        "replacement.",
    ] == summary.sentences
    assert " ".join(summary.sentences) == summary.text
    assert 0.0 < summary.confidence < 1.0
    assert summary.model.startswith("embedded:sumy-textrank@")


def test_summary_of_an_employee_request() -> None:
    assert [
        "Hello IT, our new hire Priya Patel starts on Monday 30 November in the finance team.",
        "She will need a laptop, a Salesforce licence and VPN access before her first day.",
    ] == summarise(EMPLOYEE_REQUEST).sentences


def test_summary_is_deterministic() -> None:
    first = summarise(COMPLAINT, max_sentences=3)
    assert [first] * 3 == [summarise(COMPLAINT, max_sentences=3) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        assert [first] * 3 == list(pool.map(lambda _: summarise(COMPLAINT, 3), range(3)))


def test_summary_leaves_out_the_quoted_reply() -> None:
    text = (
        "The refund for order #88213 still hasn't arrived, it has been 10 days. "
        "You promised 5 business days. Please escalate this.\n\n"
        "On Mon, 16 Nov 2026 at 09:12, Support <support@podium.example> wrote:\n"
        "> Hi Bob, your refund of $54.10 has been issued.\n"
        "> It should arrive in 5 business days."
    )
    summary = summarise(text, max_sentences=3)
    assert "$54.10" not in summary.text
    assert 3 == len(summary.sentences)


def test_short_texts_are_their_own_summary() -> None:
    summary = summarise("Where is my order O-5004? It is late.")
    assert ["Where is my order O-5004?", "It is late."] == summary.sentences
    assert 1.0 == summary.confidence
    # Three short sentences: too little to rank, the first two are the summary.
    assert ["Parcel late.", "Box torn."] == summarise("Parcel late. Box torn. Help me.").sentences


def test_empty_text_has_an_empty_summary() -> None:
    summary = summarise("  \n ")
    assert ("", [], 0.0) == (summary.text, summary.sentences, summary.confidence)
    with pytest.raises(ValueError, match="max_sentences"):
        summarise("text", max_sentences=0)


@pytest.mark.parametrize(
    ("paragraph", "expected"),
    [
        (
            "Mr. Smith called about order No. 5004. He wants a refund, e.g. to his card.",
            ("Mr. Smith called about order No. 5004.", "He wants a refund, e.g. to his card."),
        ),
        ("It cost $129.99. Why?! i want it back", ("It cost $129.99.", "Why?!", "i want it back")),
        ("J. R. Smith wrote (see above.) Thanks", ("J. R. Smith wrote (see above.)", "Thanks")),
    ],
)
def test_sentence_tokenizer(paragraph: str, expected: tuple[str, ...]) -> None:
    assert expected == RegexTokenizer().to_sentences(paragraph)


def test_summary_needs_no_nltk_data(monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("NLTK data must not be used")

    for name in ("sent_tokenize", "word_tokenize", "download"):
        monkeypatch.setattr(nltk, name, refuse)
    monkeypatch.setattr(nltk.data, "load", refuse)
    assert 2 == len(summarise(EMPLOYEE_REQUEST).sentences)


# --- OCR ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reader() -> ReceiptReader:
    return ReceiptReader()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no network access allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


@pytest.fixture(scope="module")
def documents(reader: ReceiptReader) -> dict[str, tuple[OcrDocument, float]]:
    """Each fixture read once, with the seconds it took."""
    read: dict[str, tuple[OcrDocument, float]] = {}
    for receipt in RECEIPTS:
        started = time.perf_counter()
        document = reader.read(receipt.path.read_bytes(), today=TODAY)
        read[receipt.file] = (document, time.perf_counter() - started)
    return read


@pytest.mark.parametrize("receipt", RECEIPTS, ids=lambda receipt: receipt.file)
def test_receipt_fields(documents: dict[str, tuple[OcrDocument, float]], receipt: Receipt) -> None:
    document, seconds = documents[receipt.file]
    print(
        f"\n{receipt.file}: {seconds:.2f} s, {len(document.lines)} lines, "
        f"confidence {document.confidence:.3f}"
    )
    assert (receipt.order_id, receipt.total_cents, receipt.currency, receipt.document_date) == (
        document.order_id,
        document.total_cents,
        document.currency,
        document.document_date,
    )
    assert 0.8 < document.confidence <= 1.0
    assert document.text == "\n".join(document.lines)
    assert document.model.startswith("embedded:rapidocr-onnxruntime@")


@pytest.mark.parametrize("receipt", RECEIPTS, ids=lambda receipt: receipt.file)
def test_fixture_images_are_small_pngs(receipt: Receipt) -> None:
    assert receipt.path.stat().st_size < MAX_FIXTURE_BYTES
    with Image.open(receipt.path) as image:
        assert "PNG" == image.format


def test_lines_come_in_reading_order(documents: dict[str, tuple[OcrDocument, float]]) -> None:
    lines = documents["grocery_receipt.png"][0].lines
    labels = [line.replace(" ", "").upper() for line in lines]
    subtotal = next(i for i, label in enumerate(labels) if label.startswith("SUBTOTAL"))
    total = next(i for i, label in enumerate(labels) if label.startswith("TOTAL"))
    assert subtotal < total
    # The label and its amount, printed far apart on one row, are one line.
    assert "TOTAL $25.24" == lines[total]


@pytest.mark.parametrize(
    ("lines", "cents"),
    [
        (["SUBTOTAL 23.37", "TAX 8% 1.87", "TOTAL $25.24", "VISA ****4421 25.24"], 2524),
        (["Total items: 4", "Sub-total 18.40", "GRANDTOTAL £20.70", "Total savings 2.00"], 2070),
        (["Total 45.00", "Amount due", "40.00"], 4000),
        (["Description Qty Total", "Lamp 1 25.00", "Shipping 5.00"], None),
        (["Description Qty Total", "Lamp 1 25.00", "Total incl. VAT 30.00"], 3000),
        (["Net total 100.00", "VAT total 20.00"], None),
    ],
)
def test_total_line_rules(lines: list[str], cents: int | None) -> None:
    total = ocr._total(lines)
    assert cents == (total.cents if total else None)


@pytest.mark.parametrize(
    ("lines", "order_id"),
    [
        (["FRESH MART #112", "Order#:0-5004"], "O-5004"),
        (["ORDERNUMBER", "120934"], "O-120934"),
        (["Order confirmation", "#112 Main St"], None),
        (["Invoice no. INV-2026-0412", "Ref O-88231"], "O-88231"),
    ],
)
def test_order_id_line_rules(lines: list[str], order_id: str | None) -> None:
    assert order_id == ocr._order_id(lines)


def test_document_date_prefers_the_issue_date() -> None:
    lines = ["Due date: 20/12/2026", "Invoice date: 20/11/2026"]
    assert date(2026, 11, 20) == ocr._document_date(lines, TODAY)
    assert date(2026, 3, 7) == ocr._document_date(["ORDER DATE", "March 7, 2026"], TODAY)


def test_currency_falls_back_to_the_issuer_country() -> None:
    assert "EUR" == ocr._currency(["IBAN DE89 3704 0044", "Total 12.00"], None)
    assert "GBP" == ocr._currency(["VAT no. GB 123 4567 89"], None)
    assert "USD" == ocr._currency(["Shipping 5.00 USD", "IBAN DE89 3704"], None)
    assert None is ocr._currency(["Total 12.00"], None)


def _png(width: int, height: int) -> bytes:
    buffer = BytesIO()
    Image.new("1", (width, height), 1).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not an image: the file is empty"),
        (b"%PDF-1.7 not an image at all", "not an image"),
        (b"hello, this is text", "not an image"),
        (_png(200, 100)[:60], "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_BYTES), "image too large: 10.0 MB"),
        (_png(6000, 5000), "30.0 megapixels"),
    ],
    ids=["empty", "pdf", "text", "truncated", "over-10-MB", "over-25-megapixels"],
)
def test_bad_images_are_rejected(reader: ReceiptReader, data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        reader.read(data)


def test_blank_image_reads_nothing(reader: ReceiptReader) -> None:
    document = reader.read(_png(300, 200))
    assert ("", None, None, 0.0) == (
        document.text,
        document.order_id,
        document.total_cents,
        document.confidence,
    )


def test_ocr_loads_and_reads_offline(no_network: None) -> None:
    import rapidocr_onnxruntime

    models = Path(rapidocr_onnxruntime.__file__).resolve().parent / "models"
    assert 3 == len(list(models.glob("*.onnx")))
    document = ReceiptReader().read(RECEIPTS[2].path.read_bytes())
    assert "O-7781" == document.order_id
