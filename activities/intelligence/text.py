"""Text handling shared by the embedded models: order-id extraction and intent normalisation.

Order references are recognised only where the customer marks them as such ("O-5004",
"order #5004", "order number 5004", "ord 5004", "#5004"), so that amounts, quantities, years
and phone numbers are never mistaken for order ids. Normalisation replaces the same references,
amounts, e-mail addresses, links and bare numbers with placeholder tokens so that they cannot
steer the intent classifier.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["extract_order_ids", "normalize_for_intent"]

_MIN_DIGITS = 3
# Without an explicit marker ("#", "number", "no", "id") a bare "order NNNN" needs this many
# digits and must not look like a year or a quantity ("to order 2500 pens").
_MIN_BARE_DIGITS = 4
_YEARS = range(1900, 2100)
_QUANTITY_WORDS = frozenset(
    {"x", "units", "unit", "pcs", "pieces", "items", "pairs", "boxes", "packs", "copies"}
)
# A "#1234" preceded by one of these words is some other kind of reference.
_NON_ORDER_REFERENCES = frozenset(
    {"invoice", "inv", "ticket", "case", "item", "sku", "room", "apt", "apartment", "unit"}
    | {"suite", "floor", "step", "issue", "bug", "pr", "po", "receipt", "account", "acct"}
)

_DIGITS_END = r"\b(?![.,]\d)"
_ORDER_REFERENCE = re.compile(
    rf"""
    \bO-?(?P<canonical>\d{{{_MIN_DIGITS},}}){_DIGITS_END}
    | (?P<before>\b(?:order|ord|purchase)s?\b[.-]?\s*)
      (?P<marker>(?:number|num|nr|no|id|ref)\b\.?[\s:#]*|[:#][\s#]*|O-?)?
      (?P<keyed>\d{{{_MIN_DIGITS},}}){_DIGITS_END}
    | (?<![\w&])\#\s?(?P<hashed>\d{{{_MIN_DIGITS},}}){_DIGITS_END}
    """,
    re.IGNORECASE | re.VERBOSE,
)
# "orders 5004, 5005 and #5006": further ids listed after a keyed reference.
_LIST_CONTINUATION = re.compile(
    rf"\s*(?:,|/|&|\band\b|\bor\b)\s*(?:#\s?|O-?)?(?P<digits>\d{{{_MIN_DIGITS},}}){_DIGITS_END}",
    re.IGNORECASE,
)
_WORD_BEFORE = re.compile(r"(\w+)\W*$")
_WORD_AFTER = re.compile(r"^\s*(\w+)")

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]{1,60}?)\s*\}\}")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_CURRENCY_CODES = r"usd|eur|gbp|cad|aud|dollars?|bucks|euros?|pounds?|quid"
_AMOUNT = re.compile(
    rf"""
    (?:[$€£¥]|\b(?:usd|eur|gbp|cad|aud)\b)\s?\d[\d,]*(?:\.\d+)?
    | \b\d[\d,]*(?:\.\d+)?\s?(?:[$€£]|(?:{_CURRENCY_CODES})\b)
    """,
    re.IGNORECASE | re.VERBOSE,
)
_NUMBER = re.compile(r"\b\d+(?:[.,:/-]\d+)*\b")
_SPACES = re.compile(r"\s+")


def _is_order_reference(text: str, match: re.Match[str]) -> bool:
    if match.group("hashed") is not None:
        word = _WORD_BEFORE.search(text, 0, match.start())
        return word is None or word.group(1).lower() not in _NON_ORDER_REFERENCES
    keyed = match.group("keyed")
    if keyed is None or match.group("marker"):
        return True
    # "order 5004" without a marker: reject years and quantities ("to order 2500 pens").
    if len(keyed) < _MIN_BARE_DIGITS or (len(keyed) == 4 and int(keyed) in _YEARS):
        return False
    following = _WORD_AFTER.match(text[match.end() :])
    if following is not None and following.group(1).lower() in _QUANTITY_WORDS:
        return False
    preceding = _WORD_BEFORE.search(text, 0, match.start())
    return preceding is None or preceding.group(1).lower() != "to"


def _order_reference_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of every order reference, in order of appearance."""
    spans: list[tuple[int, int, str]] = []
    position = 0
    while (match := _ORDER_REFERENCE.search(text, position)) is not None:
        if not _is_order_reference(text, match):
            position = match.start() + 1
            continue
        position = match.end()
        if match.group("keyed") is not None:
            # Keep the word "order" itself: it is a useful signal for the classifier.
            spans.append((match.end("before"), match.end(), match.group("keyed")))
            while (more := _LIST_CONTINUATION.match(text, position)) is not None:
                spans.append((more.start(), more.end(), more.group("digits")))
                position = more.end()
        else:
            digits = match.group("canonical") or match.group("hashed")
            spans.append((match.start(), match.end(), digits))
    return spans


def extract_order_ids(text: str) -> list[str]:
    """Order ids mentioned in `text`, as canonical `O-<digits>`, deduplicated, in order."""
    found: dict[str, None] = {}
    for _, _, digits in _order_reference_spans(text):
        found.setdefault(f"O-{digits}", None)
    return list(found)


def _placeholder_token(match: re.Match[str]) -> str:
    # Template placeholders such as "{{Order Number}}" stand for the value they name.
    name = match.group(1).lower()
    if "order" in name:
        return " ordernum "
    if "invoice" in name:
        return " invoice num "
    if any(word in name for word in ("amount", "money", "price", "currency")):
        return " amount "
    return " entity "


def normalize_for_intent(text: str) -> str:
    """Lower-cased text with ids, amounts, addresses and numbers replaced by fixed tokens."""
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    text = _PLACEHOLDER.sub(_placeholder_token, text)
    text = _EMAIL.sub(" emailaddr ", text)
    text = _URL.sub(" url ", text)
    pieces: list[str] = []
    last = 0
    for start, end, _ in _order_reference_spans(text):
        pieces.append(text[last:start])
        pieces.append(" ordernum ")
        last = end
    pieces.append(text[last:])
    text = "".join(pieces)
    text = _AMOUNT.sub(" amount ", text)
    text = _NUMBER.sub(" num ", text)
    return _SPACES.sub(" ", text.lower()).strip()
