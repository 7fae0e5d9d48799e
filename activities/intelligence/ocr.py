"""Reading receipts and invoices: offline OCR and the fields a refund or invoice case needs.

`ReceiptReader` loads RapidOCR (PP-OCRv4 detection and recognition on ONNX Runtime) once; its
three ONNX models ship inside the `rapidocr_onnxruntime` wheel (`rapidocr_onnxruntime/models/`)
and nothing is fetched. `read(image_bytes)` checks the image, recognises its text boxes, puts
them back into lines in reading order and finds the order id, the total, its currency and the
document date.

Rules for the fields, tested on the fixtures in `tests/fixtures/`:

- Total: the amount on the line labelled GRAND TOTAL / AMOUNT DUE / BALANCE DUE / TOTAL DUE
  (preferred) or TOTAL, never SUBTOTAL, TAX/VAT, "Total savings", "Total items" or a net total;
  the last such line wins, and a label alone on its line takes the amount on the next line.
- Order id: a reference on a line that mentions an order ("Order #: O-5004", "Order no. 7781")
  or a canonical `O-<digits>` anywhere, never a bare "#112" (a store number).
- Date: the first date on a line labelled "date" that is not a due, delivery or expiry date,
  else the first date in the document.
- Currency: of the total, else the one the document names most, else the issuer's country (IBAN
  or VAT number prefix). The recognition model's alphabet has "$" and "¥" but no "€" or "£":
  those symbols are dropped or read as "f", so euro and pound amounts rely on the rest.

Confidence is the recognition score of the text, averaged over its characters: how sure the OCR
is of what it read. A field it could not find is None, whatever the confidence.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import date
from importlib.metadata import version
from io import BytesIO
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from activities.intelligence.extract import Money, find_amounts, find_dates
from activities.intelligence.schemas import OcrDocument
from activities.intelligence.text import extract_order_ids

__all__ = ["MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "ReceiptReader"]

MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_IMAGE_PIXELS = 25_000_000
_ACCEPTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF"})
# Two boxes are on one line when their vertical centres are closer than this share of the
# smaller box height.
_SAME_LINE = 0.5

# Labels are matched on the line upper-cased with its spaces removed: the OCR drops spaces
# ("GRANDTOTAL", "Amountdue").
_STRONG_TOTAL = re.compile(
    r"GRANDTOTAL|AMOUNTDUE|BALANCEDUE|TOTALDUE|AMOUNTPAYABLE|TOTALPAYABLE|TOTALTOPAY"
)
_TOTAL = re.compile(r"TOTAL")
_NOT_TOTAL = re.compile(
    r"SUB-?TOTAL|TOTAL(?:TAX|VAT|SAVING|ITEM|QTY|QUANTITY|DISCOUNT|POINT|WEIGHT|NET|EXCL|BEFORE)"
    r"|(?:TAX|VAT|NET)TOTAL|^(?:TAX|VAT)"
)
_DATE_LABEL = re.compile(r"DATE|DATED|ISSUED")
_NOT_DOCUMENT_DATE = re.compile(r"DUE|DELIVER|SHIP|EXPIR|VALID|BEST|PRINTED")
_ORDER_WORD = re.compile(r"\b(?:order|ord|purchase)", re.IGNORECASE)
# The OCR reads "O-5004" as "0-5004" and glues "Order" to what follows ("Order#:", "ORDERNUMBER").
_ZERO_FOR_O = re.compile(r"(?<![\w-])0-(?=\d{3,})")
_GLUED_ORDER = re.compile(r"\b(order|ord)(?=number|num|no\b|no\.|nr|id\b|ref|#)", re.IGNORECASE)
# A line that is only an order label, whose value is printed below it.
_ORDER_LABEL_ONLY = re.compile(
    r"^\W*(?:order|ord)\.?\s*(?:number|num|no\.?|nr|id|ref)?\s*[:#]?\s*$", re.IGNORECASE
)
_CANONICAL_ORDER = re.compile(r"\bO-\d{3,}\b")
# "£" is outside the model's alphabet and comes back as "f" before an amount.
_F_FOR_POUND = re.compile(r"(?<![A-Za-z])[fF](?=\d{1,6}[.,]\d{2}\b)")
_COUNTRY_HINT = re.compile(
    r"IBAN[:.]?(?P<iban>[A-Z]{2})\d{2}|VAT(?:ID|NO|NUMBER|REG(?:NO)?)?[:.]*(?P<vat>[A-Z]{2})\d"
)
_EURO_COUNTRIES = frozenset(
    re.findall(r"\S+", "AT BE CY DE EE ES FI FR GR HR IE IT LT LU LV MT NL PT SI SK")
)
_COUNTRY_CURRENCIES = {
    "GB": "GBP",
    "CH": "CHF",
    "SE": "SEK",
    "DK": "DKK",
    "NO": "NOK",
    "PL": "PLN",
    "CZ": "CZK",
}


@dataclass(frozen=True, slots=True)
class _Box:
    text: str
    score: float
    left: float
    top: float
    bottom: float

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def height(self) -> float:
        return max(self.bottom - self.top, 1.0)


def _lines(boxes: list[_Box]) -> list[str]:
    """Boxes grouped into lines, top to bottom, each line left to right."""
    rows: list[list[_Box]] = []
    for box in sorted(boxes, key=lambda box: (box.middle, box.left)):
        row = rows[-1] if rows else None
        if row is not None:
            middle = sum(b.middle for b in row) / len(row)
            height = min(min(b.height for b in row), box.height)
            if abs(box.middle - middle) < _SAME_LINE * height:
                row.append(box)
                continue
        rows.append([box])
    return [" ".join(b.text for b in sorted(row, key=lambda b: b.left)) for row in rows]


def _label(line: str) -> str:
    return re.sub(r"\s+", "", line).upper()


def _total(lines: list[str]) -> Money | None:
    """The amount of the strongest, last total line."""
    best: tuple[int, int, Money] | None = None
    for index, line in enumerate(lines):
        label = _label(line)
        if not _TOTAL.search(label) and not _STRONG_TOTAL.search(label):
            continue
        if _NOT_TOTAL.search(label) and not _STRONG_TOTAL.search(label):
            continue
        strength = 2 if _STRONG_TOTAL.search(label) else 1
        amounts = find_amounts(line, bare=True)
        # "AMOUNT DUE" above its amount; not a table header ending in "Total".
        label_only = not any(character.isdigit() for character in line) and (
            _TOTAL.match(label) or _STRONG_TOTAL.match(label)
        )
        if not amounts and label_only and index + 1 < len(lines):
            amounts = find_amounts(lines[index + 1], bare=True)
        if amounts and (best is None or (strength, index) >= best[:2]):
            best = (strength, index, amounts[-1])
    return best[2] if best else None


def _order_id(lines: list[str]) -> str | None:
    for index, line in enumerate(lines):
        if not _ORDER_WORD.search(line):
            continue
        text = _GLUED_ORDER.sub(r"\1 ", _ZERO_FOR_O.sub("O-", line))
        ids = extract_order_ids(text)
        if not ids and _ORDER_LABEL_ONLY.search(text) and index + 1 < len(lines):
            # "ORDER NUMBER" above "120934".
            following = _ZERO_FOR_O.sub("O-", lines[index + 1])
            ids = extract_order_ids(f"{text} {following}")
        if ids:
            return ids[0]
    for line in lines:
        match = _CANONICAL_ORDER.search(line)
        if match:
            return match.group(0)
    return None


def _document_date(lines: list[str], today: date | None) -> date | None:
    first: date | None = None
    for index, line in enumerate(lines):
        dates = find_dates(line, today)
        label = _label(line)
        labelled = _DATE_LABEL.search(label) and not _NOT_DOCUMENT_DATE.search(label)
        if labelled and not dates and index + 1 < len(lines):
            # "ORDER DATE" above "March 7, 2026".
            dates = find_dates(lines[index + 1], today)
        if dates and labelled:
            return dates[0].value
        if dates and first is None and not _NOT_DOCUMENT_DATE.search(label):
            first = dates[0].value
    return first


def _currency(lines: list[str], total: Money | None) -> str | None:
    if total is not None and total.currency is not None:
        return total.currency
    named = Counter(
        money.currency
        for line in lines
        for money in find_amounts(line)
        if money.currency is not None
    )
    if named:
        return named.most_common(1)[0][0]
    for line in lines:
        match = _COUNTRY_HINT.search(_label(line))
        if match:
            country = match.group("iban") or match.group("vat")
            if country in _EURO_COUNTRIES:
                return "EUR"
            if country in _COUNTRY_CURRENCIES:
                return _COUNTRY_CURRENCIES[country]
    return None


def _checked_image(image_bytes: bytes) -> Image.Image:
    """The decoded image, upright, on white; `ValueError` saying why when it cannot be read."""
    if not image_bytes:
        raise ValueError("not an image: the file is empty")
    if len(image_bytes) > MAX_IMAGE_BYTES:
        raise ValueError(
            f"image too large: {len(image_bytes) / 1_048_576:.1f} MB, "
            f"the limit is {MAX_IMAGE_BYTES // 1_048_576} MB"
        )
    try:
        opened = Image.open(BytesIO(image_bytes))
    except UnidentifiedImageError as err:
        raise ValueError("not an image: the file is not in a known image format") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"image too large: {err}") from err
    if opened.format not in _ACCEPTED_FORMATS:
        raise ValueError(
            f"unsupported image format {opened.format}; "
            f"accepted: {', '.join(sorted(_ACCEPTED_FORMATS))}"
        )
    # Checked on the header, before the pixels are decoded.
    width, height = opened.size
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"image too large: {width}x{height} is {width * height / 1e6:.1f} megapixels, "
            f"the limit is {MAX_IMAGE_PIXELS / 1e6:.0f}"
        )
    try:
        opened.load()
    except (OSError, SyntaxError) as err:
        raise ValueError(f"not a readable image: {err}") from err
    # Phone photos carry their rotation in EXIF.
    image = ImageOps.exif_transpose(opened)
    if image.mode in {"RGBA", "LA", "PA"} or "transparency" in image.info:
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


class ReceiptReader:
    """Offline OCR for receipts and invoices. Build once per process; safe to share."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        # The defaults point at the models inside the package; no path, no download.
        self._engine: Any = RapidOCR()
        # One image at a time: ONNX Runtime already spreads one image over every core, and
        # RapidOCR keeps per-call settings on the engine object.
        self._lock = threading.Lock()
        self.model = f"embedded:rapidocr-onnxruntime@{version('rapidocr-onnxruntime')}+ppocrv4"

    def _recognise(self, image: Image.Image) -> list[_Box]:
        with self._lock:
            result, _ = self._engine(image)
        boxes: list[_Box] = []
        for corners, text, score in result or []:
            ys = [float(point[1]) for point in corners]
            xs = [float(point[0]) for point in corners]
            cleaned = unicodedata.normalize("NFKC", str(text)).strip()
            if cleaned:
                boxes.append(_Box(cleaned, float(score), min(xs), min(ys), max(ys)))
        return boxes

    def read(self, image_bytes: bytes, *, today: date | None = None) -> OcrDocument:
        """The text and fields of a receipt or invoice image (PNG, JPEG, WebP, ...).

        `today` places a date printed without a year (default: the machine's date).
        `ValueError` when the bytes are not an image, or one over 10 MB or 25 megapixels.
        """
        boxes = self._recognise(_checked_image(image_bytes))
        lines = [_F_FOR_POUND.sub("£", line) for line in _lines(boxes)]
        total = _total(lines)
        characters = sum(len(box.text) for box in boxes)
        confidence = (
            sum(box.score * len(box.text) for box in boxes) / characters if characters else 0.0
        )
        return OcrDocument(
            text="\n".join(lines),
            lines=lines,
            order_id=_order_id(lines),
            total_cents=total.cents if total else None,
            currency=_currency(lines, total),
            document_date=_document_date(lines, today),
            confidence=round(min(max(confidence, 0.0), 1.0), 4),
            model=self.model,
        )
