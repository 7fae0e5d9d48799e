"""Personal data out of the logs: emails, payment card numbers and phone numbers are masked.

`redact_personal_data` is a structlog processor (`core.logging` puts it in the chain every log
line goes through, structlog's own and the standard library's, Temporal's included). It masks the
event message and every string value, recursively through dicts, lists and tuples:

    jane.doe@example.com      -> j***@example.com
    4242 4242 4242 4242       -> **** **** **** 4242   (13-19 digits that pass the Luhn check)
    +1 415 555 2671           -> ***-***-2671          (E.164, and national formats of 9+ digits)

The Luhn check keeps long business numbers (order ids, amounts, timestamps) readable; only
numbers written the way people write phone numbers count as phones, so `O-5004`, `129.99`,
`2026-11-25T09:00:00Z` and UUIDs pass unchanged. Keys are never changed, nor values that are not
strings. It is a safety net, not a licence: log ids, not personal data.
"""

from __future__ import annotations

import re
from typing import Any

from structlog.typing import EventDict, WrappedLogger

__all__ = ["redact", "redact_personal_data", "redact_text"]

_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9][A-Za-z0-9._%+-]*)@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,})(?![\w-])"
)
# 13-19 digits, single spaces or dashes between them; not glued to a word or a longer number.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# E.164 and international forms: +, then 9-15 digits with spaces, dots, dashes, parentheses.
_PHONE_INTL = re.compile(r"(?<![\w+])\+(?:\d[ .()-]{0,2}){8,14}\d(?![\w-]|\.\d)")
# North American: (415) 555-2671, 415-555-2671, 415.555.2671, 415 555 2671.
_PHONE_NANP = re.compile(r"(?<![\w.+-])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-]|\.\d)")
# With a trunk prefix: 020 7946 0958, 07700 900123, 01 23 45 67 89, 030-12345678.
_PHONE_TRUNK = re.compile(r"(?<![\w.+-])0\d{1,4}(?:[ -]\d{2,8}){1,4}(?![\w-]|\.\d)")
_PHONE_DIGITS = range(9, 16)
_NON_DIGIT = re.compile(r"\D")
# Cheap test first: most log values hold no '@' and no run of digits worth a look.
_CANDIDATE = re.compile(r"@|\d[\d .()-]{7,}\d")


def _luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)[0]}***@{match.group(2)}"


def _mask_card(match: re.Match[str]) -> str:
    digits = _NON_DIGIT.sub("", match.group(0))
    if not 13 <= len(digits) <= 19 or not _luhn(digits):
        return match.group(0)
    return f"**** **** **** {digits[-4:]}"


def _mask_phone(match: re.Match[str]) -> str:
    digits = _NON_DIGIT.sub("", match.group(0))
    if len(digits) not in _PHONE_DIGITS:
        return match.group(0)
    return f"***-***-{digits[-4:]}"


def redact_text(text: str) -> str:
    """`text` with its emails, card numbers and phone numbers masked."""
    if not _CANDIDATE.search(text):
        return text
    text = _EMAIL.sub(_mask_email, text)
    text = _CARD.sub(_mask_card, text)
    for phone in (_PHONE_INTL, _PHONE_NANP, _PHONE_TRUNK):
        text = phone.sub(_mask_phone, text)
    return text


def redact(value: Any) -> Any:
    """Every string in `value` redacted, through dicts, lists and tuples; copies, never edits."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    return value


def redact_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask personal data in the message and every string field."""
    return {
        # structlog's own bookkeeping (`_record`, `_from_structlog`) passes untouched.
        key: value if key.startswith("_") else redact(value)
        for key, value in event_dict.items()
    }
