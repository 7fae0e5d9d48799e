"""Rule-based extraction of structured fields from customer and employee messages.

`extract_fields(text)` finds, with regular expressions and a few rules, what the processes need
to act on a message: the order id, an amount and its currency, the dates mentioned, the employee
an employee-service request is about, the IT/SaaS system it names (from the shipped list in
`datasets/extraction/systems.txt`) and an e-mail address. Nothing is downloaded and the same
text always gives the same result (relative dates depend only on the `today` argument).

Conventions, where a message can be read more than one way:

- Order ids: only references the customer marks as such (`text.extract_order_ids`), as
  `O-<digits>`; the first one mentioned. Employee numbers ("employee #40021") and system names
  ("O365") are masked first: they are not orders.
- Amounts need a currency marker ("$129.99", "129.99 USD", "USD 1,299", "€45", "45 euros");
  bare numbers are quantities, years or ids. "1,299" and "1.299" are thousands, "45,50" and
  "12.5" have decimals. Cents are the amount times 100 for every currency. The first one wins.
- Dates: ISO, day/month/year, month-name forms, "the 16th", and "yesterday", "last Tuesday"
  or "since Tuesday" (the most recent Tuesday before today), "next Friday" (the first Friday
  after today), "3 days ago". A bare "on Monday" is left out: past or future is unclear. A
  date without a year is the one nearest to today; a numeric date that reads both ways
  ("11/02/2026") is also the reading nearest to today, and counts as ambiguous.
- Employee: an employee id ("employee id E-1234", "E-0042", "employee number 48213") first;
  else a full name after a cue ("for Jane Smith", "new hire Priya Patel", "add Sam Lee to");
  else a possessive ("Peter Walsh's files"); else the writer's own name ("my name is Tom
  Baker"). A capitalised pair that starts with a system ("for Google Drive") is not a person,
  and a system inside a person's name ("Tom Jenkins") is not a system. Names count only in
  messages that look like employee-service requests (they name a system or mention access,
  accounts, a laptop, onboarding...): elsewhere "for Jane Smith" is a gift, not an employee.
- System: the first listed system mentioned, by its canonical name ("O365" -> "Microsoft 365").

Confidence: every field gets a certainty, 1/k when k different values were found (the first is
returned), 0.5 for `dates` when a numeric date reads both ways, 0 when absent; `currency`
shares the certainty of the amount. The confidence is the mean certainty over the *expected*
fields, by default the fields that were found (0.0 when nothing was found). A caller that
knows what it needs (a refund needs `order_id` and `amount_cents`) passes `expected=` and a
missing field then lowers the confidence.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

from activities.intelligence.schemas import ExtractedFields
from activities.intelligence.text import extract_order_ids

__all__ = [
    "EXTRACTED_FIELD_NAMES",
    "SYSTEMS_FILE",
    "FoundDate",
    "Money",
    "extract_fields",
    "extraction_model_name",
    "find_amounts",
    "find_dates",
]

SYSTEMS_FILE = Path(__file__).resolve().parents[2] / "datasets" / "extraction" / "systems.txt"
# Bumped whenever a rule changes, so the model name says which rules produced a result.
_RULES_VERSION = "1"
# Long e-mail threads: what the writer asks for comes first; this bounds the regex work.
MAX_EXTRACTED_CHARS = 20_000
EXTRACTED_FIELD_NAMES = (
    "order_id",
    "amount_cents",
    "currency",
    "dates",
    "employee",
    "system_name",
    "email",
)
_AMBIGUOUS_DATE_CERTAINTY = 0.5


def _split(words: str) -> list[str]:
    """Word lists are written as text: easier to read and to extend than a column of quotes."""
    return words.split()


# --- Money --------------------------------------------------------------------------------------

_SYMBOLS = {
    "us$": "USD",
    "ca$": "CAD",
    "c$": "CAD",
    "au$": "AUD",
    "a$": "AUD",
    "nz$": "NZD",
    "hk$": "HKD",
    "s$": "SGD",
    "$": "USD",
    "€": "EUR",
    "£": "GBP",
    "¥": "JPY",
    "₹": "INR",
}
_CODES = frozenset(
    _split("USD EUR GBP CAD AUD NZD CHF JPY INR SEK NOK DKK PLN CZK MXN BRL SGD HKD ZAR CNY")
)
_WORDS = {
    "dollar": "USD",
    "dollars": "USD",
    "bucks": "USD",
    "euro": "EUR",
    "euros": "EUR",
    "pound": "GBP",
    "pounds": "GBP",
    "quid": "GBP",
    "yen": "JPY",
    "rupees": "INR",
}
_SYMBOL_PATTERN = r"(?<![A-Za-z])(?:US|CA|C|AU|A|NZ|HK|S)\$|[$€£¥₹]"
_CODE_PATTERN = "|".join(sorted(_CODES))
_WORD_PATTERN = "|".join(sorted(_WORDS, key=len, reverse=True))
_NUMBER_PATTERN = r"""
    (?P<number>
        \d{1,3}(?:[ ]\d{3})+,\d{1,2}       # 1 299,00: space-grouped only with decimal commas
      | \d{1,3}(?:,\d{3})+(?:\.\d{1,2})?   # 1,299.99
      | \d{1,3}(?:\.\d{3})+(?:,\d{1,2})?   # 1.299,99
      | \d+(?:[.,]\d{1,2})?                # 1299 | 129.99 | 45,50
    )(?![\d])(?![.,]\d)
"""
_AMOUNT_BEFORE = re.compile(
    rf"(?P<marker>{_SYMBOL_PATTERN}|\b(?:{_CODE_PATTERN})\b)[ ]?-?{_NUMBER_PATTERN}",
    re.IGNORECASE | re.VERBOSE,
)
_AMOUNT_AFTER = re.compile(
    rf"""(?<![\w.,/-]){_NUMBER_PATTERN}[ ]?
    (?P<marker>{_SYMBOL_PATTERN}|(?:{_CODE_PATTERN}|{_WORD_PATTERN})\b)""",
    re.IGNORECASE | re.VERBOSE,
)
# Receipts print totals without a currency: "TOTAL 25.24". Only with exactly two decimals.
_BARE_AMOUNT = re.compile(
    r"(?<![\w.,/:-])(?P<number>\d{1,3}(?:,\d{3})+\.\d{2}|\d+[.,]\d{2})(?![\d.,%])(?!\s?%)"
)
# "5 pounds of flour" is a weight.
_WEIGHT_AFTER = re.compile(r"\s+(?:of|heavy|in weight)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Money:
    """An amount found in text; `currency` is None for a bare receipt number."""

    cents: int
    currency: str | None
    start: int
    end: int


def _to_cents(number: str) -> int:
    digits = number.replace(" ", "")
    last = max(digits.rfind(","), digits.rfind("."))
    fraction = ""
    if last >= 0 and 1 <= len(digits) - last - 1 <= 2:
        digits, fraction = digits[:last], digits[last + 1 :]
    units = int(re.sub(r"[.,]", "", digits) or "0")
    return units * 100 + int(fraction.ljust(2, "0") or "0")


def _currency_of(marker: str) -> str:
    key = marker.lower()
    if key in _SYMBOLS:
        return _SYMBOLS[key]
    if key in _WORDS:
        return _WORDS[key]
    return marker.upper()


def find_amounts(text: str, *, bare: bool = False) -> list[Money]:
    """Every amount in `text`, in order; `bare=True` also takes "25.24" without a currency."""
    found: list[Money] = []
    for pattern in (_AMOUNT_BEFORE, _AMOUNT_AFTER):
        for match in pattern.finditer(text):
            marker = match.group("marker")
            if marker.lower().startswith("pound") and _WEIGHT_AFTER.match(text, match.end()):
                continue
            found.append(
                Money(_to_cents(match.group("number")), _currency_of(marker), *match.span())
            )
    if bare:
        for match in _BARE_AMOUNT.finditer(text):
            found.append(Money(_to_cents(match.group("number")), None, *match.span()))
    return _non_overlapping(found)


# --- Dates --------------------------------------------------------------------------------------

_MONTH_NUMBERS = {
    name: number
    for number, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ],
        start=1,
    )
    for name in names
}
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH = (
    r"(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)(?![a-z])\.?"
)
_YEAR = r"(?:,?\s*(?P<year>(?:19|20)\d{2})(?!\d))?"
_ORDINAL = r"(?:st|nd|rd|th)?"
_ISO_DATE = re.compile(
    r"(?<![\d/.-])(?P<year>(?:19|20)\d{2})(?P<sep>[-/.])(?P<month>\d{1,2})(?P=sep)"
    r"(?P<day>\d{1,2})(?!\d)"
)
_NUMERIC_DATE = re.compile(
    r"(?<![\d/.-])(?P<first>\d{1,2})(?P<sep>[/.-])(?P<second>\d{1,2})(?P=sep)"
    r"(?P<year>(?:19|20)\d{2}|(?<=/)\d{2})(?![\d/.-]\d)(?!\d)"
)
_MONTH_DAY = re.compile(
    rf"\b{_MONTH}\s*(?P<day>\d{{1,2}}){_ORDINAL}(?!\d)(?![a-z]){_YEAR}", re.IGNORECASE
)
_DAY_MONTH = re.compile(
    rf"(?<![\d.,/$€£-])\b(?P<day>\d{{1,2}}){_ORDINAL}\s*(?:of\s+)?{_MONTH}{_YEAR}", re.IGNORECASE
)
_THE_ORDINAL = re.compile(
    rf"\b(?:(?P<weekday>{'|'.join(_WEEKDAYS)}),?\s+)?the\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)\b"
    rf"(?!\s*(?:of\s+)?{_MONTH})",
    re.IGNORECASE,
)
_RELATIVE_DAY = re.compile(
    r"\b(?P<word>the\s+day\s+before\s+yesterday|the\s+day\s+after\s+tomorrow|yesterday"
    r"|tomorrow|today|tonight|this\s+(?:morning|afternoon|evening))\b",
    re.IGNORECASE,
)
_RELATIVE_WEEKDAY = re.compile(
    rf"\b(?P<direction>last|since|this\s+past|past|previous|next|this\s+coming|coming)\s+"
    rf"(?P<weekday>{'|'.join(_WEEKDAYS)})\b",
    re.IGNORECASE,
)
_COUNTS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_AGO = re.compile(
    rf"\b(?P<count>\d{{1,2}}|{'|'.join(_COUNTS)}|(?:a\s+)?couple(?:\s+of)?)\s+"
    r"(?P<unit>days?|weeks?)\s+ago\b",
    re.IGNORECASE,
)
_RELATIVE_DAYS = {
    "the day before yesterday": -2,
    "yesterday": -1,
    "today": 0,
    "tonight": 0,
    "this morning": 0,
    "this afternoon": 0,
    "this evening": 0,
    "tomorrow": 1,
    "the day after tomorrow": 2,
}


@dataclass(frozen=True, slots=True)
class FoundDate:
    """A date found in text; `ambiguous` when a numeric date reads both day- and month-first."""

    value: date
    ambiguous: bool
    start: int
    end: int


def _valid_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _nearest(candidates: Iterable[date | None], today: date) -> date | None:
    """The candidate nearest to today; on a tie, the earlier one (customers report the past)."""
    valid = [candidate for candidate in candidates if candidate is not None]
    if not valid:
        return None
    return min(valid, key=lambda candidate: (abs((candidate - today).days), candidate))


def _month_of(match: re.Match[str]) -> int | None:
    name = match.group("month")
    # "may" is also a verb: only "May" or "MAY" is the month.
    if name == "may":
        return None
    return _MONTH_NUMBERS[name.lower().rstrip(".")]


def _named_month_date(match: re.Match[str], today: date) -> date | None:
    month = _month_of(match)
    if month is None:
        return None
    day = int(match.group("day"))
    if match.group("year"):
        return _valid_date(int(match.group("year")), month, day)
    years = (today.year - 1, today.year, today.year + 1)
    return _nearest((_valid_date(year, month, day) for year in years), today)


def _numeric_date(match: re.Match[str], today: date) -> tuple[date | None, bool]:
    first, second = int(match.group("first")), int(match.group("second"))
    year = int(match.group("year"))
    if year < 100:
        year += 2000
    day_first = _valid_date(year, second, first)
    month_first = _valid_date(year, first, second)
    if day_first is None or month_first is None or day_first == month_first:
        return day_first or month_first, False
    return _nearest((day_first, month_first), today), True


def _ordinal_day(match: re.Match[str], today: date) -> date | None:
    """ "(Monday) the 16th": that day of this, the last or the next month, nearest to today."""
    day = int(match.group("day"))
    months = [(today.year, today.month + offset) for offset in (-1, 0, 1)]
    candidates = [
        _valid_date(year + (month - 1) // 12, (month - 1) % 12 + 1, day) for year, month in months
    ]
    weekday = match.group("weekday")
    if weekday:
        wanted = _WEEKDAYS.index(weekday.lower())
        candidates = [c for c in candidates if c is not None and c.weekday() == wanted]
    return _nearest(candidates, today)


def _relative_weekday(match: re.Match[str], today: date) -> date:
    wanted = _WEEKDAYS.index(match.group("weekday").lower())
    if match.group("direction").lower() in {"next", "coming", "this coming"}:
        return today + timedelta(days=(wanted - today.weekday()) % 7 or 7)
    return today - timedelta(days=(today.weekday() - wanted) % 7 or 7)


def _days_ago(match: re.Match[str], today: date) -> date:
    count_text = match.group("count").lower()
    if count_text.isdigit():
        count = int(count_text)
    else:
        count = 2 if "couple" in count_text else _COUNTS[count_text]
    unit = 7 if match.group("unit").lower().startswith("week") else 1
    return today - timedelta(days=count * unit)


def find_dates(text: str, today: date | None = None) -> list[FoundDate]:
    """Every date in `text`, in order of mention; relative ones are resolved against `today`."""
    today = today or date.today()
    found: list[FoundDate] = []

    def add(match: re.Match[str], value: date | None, ambiguous: bool = False) -> None:
        if value is not None:
            found.append(FoundDate(value, ambiguous, *match.span()))

    for match in _ISO_DATE.finditer(text):
        add(match, _valid_date(*(int(match.group(g)) for g in ("year", "month", "day"))))
    for match in _NUMERIC_DATE.finditer(text):
        add(match, *_numeric_date(match, today))
    for pattern in (_MONTH_DAY, _DAY_MONTH):
        for match in pattern.finditer(text):
            add(match, _named_month_date(match, today))
    for match in _THE_ORDINAL.finditer(text):
        add(match, _ordinal_day(match, today))
    for match in _RELATIVE_DAY.finditer(text):
        word = re.sub(r"\s+", " ", match.group("word").lower())
        add(match, today + timedelta(days=_RELATIVE_DAYS[word]))
    for match in _RELATIVE_WEEKDAY.finditer(text):
        add(match, _relative_weekday(match, today))
    for match in _AGO.finditer(text):
        add(match, _days_ago(match, today))
    return _non_overlapping(found)


# --- Systems ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SystemCatalog:
    patterns: tuple[re.Pattern[str], ...]
    canonical: dict[str, str]
    digest: str

    def find(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, canonical name) of every system mentioned, in order, longest first."""
        spans: list[tuple[int, int, str]] = []
        for pattern in self.patterns:
            for match in pattern.finditer(text):
                alias = re.sub(r"\s+", " ", match.group(0))
                name = self.canonical.get(alias) or self.canonical[alias.lower()]
                spans.append((match.start(), match.end(), name))
        spans.sort(key=lambda span: (span[0], span[0] - span[1]))
        chosen: list[tuple[int, int, str]] = []
        for span in spans:
            if not chosen or span[0] >= chosen[-1][1]:
                chosen.append(span)
        return chosen


def _alias_pattern(aliases: Iterable[str], flags: int) -> re.Pattern[str] | None:
    ordered = sorted(set(aliases), key=len, reverse=True)
    if not ordered:
        return None
    body = "|".join(re.escape(alias).replace(r"\ ", r"\s+") for alias in ordered)
    return re.compile(rf"(?<![\w.@/-])(?:{body})(?![\w@])(?!\.\w)", flags)


@functools.cache
def _systems(path: Path) -> _SystemCatalog:
    raw = path.read_bytes()
    canonical: dict[str, str] = {}
    exact: list[str] = []
    folded: list[str] = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        names = [name.strip() for name in line.split("|")]
        if any(not name.lstrip("=") for name in names):
            raise ValueError(f"{path}:{number}: empty system name")
        canonical_name = names[0].lstrip("=")
        for name in names:
            if name.startswith("="):
                exact.append(name[1:])
                canonical[name[1:]] = canonical_name
            else:
                folded.append(name)
                canonical[name.lower()] = canonical_name
    patterns = tuple(
        pattern
        for pattern in (_alias_pattern(exact, 0), _alias_pattern(folded, re.IGNORECASE))
        if pattern is not None
    )
    digest = hashlib.sha256(f"rules={_RULES_VERSION}\n".encode() + raw).hexdigest()[:8]
    return _SystemCatalog(patterns, canonical, digest)


def extraction_model_name(systems_file: Path | None = None) -> str:
    """`embedded:rules-extract@<hash of the rules version and the systems list>`."""
    return f"embedded:rules-extract@{_systems(systems_file or SYSTEMS_FILE).digest}"


# --- People -------------------------------------------------------------------------------------

_EMPLOYEE_ID = re.compile(
    r"""
    \b(?:employee|emp|staff|personnel)\.?\s*(?:id|number|num|no\.?|\#)?\s*(?:is\s+)?[:\#]?\s*
        (?P<cued>[A-Z]{1,4}-?\d{3,}|\d{3,})\b
    | \b(?P<canonical>(?:EMP|E)-?\d{3,})\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_NAME_TOKEN = r"[A-Z][a-z]*(?:['\u2019]?[A-Z][a-z]+)*(?:-[A-Z][a-z]+)?"
_NAME = rf"(?P<name>{_NAME_TOKEN}(?:[ \t]+{_NAME_TOKEN}){{1,3}})"
# "for our new recruiter Nina Alvarez": lower-case words between the cue and the name.
_FILLER = r"(?:[ \t]+(?i:our|my|the|a|an|his|her|their))?(?:[ \t]+[a-z][a-z-]*){0,3}"
_SUBJECT_CUE = re.compile(
    r"(?i:\b(?:for|on\s+behalf\s+of|employee|new\s+hire|new\s+starter|new\s+joiner|contractor"
    r"|colleague|co-?worker|teammate|grant|give|add|onboard|offboard|invite|provision|enrol"
    r"|enroll|remove|disable|deactivate|re-?enable|unlock)\b)"
    rf"{_FILLER}[ \t]*[,:]?[ \t]+{_NAME}"
)
_POSSESSIVE = re.compile(rf"(?<![\w'\u2019]){_NAME}['\u2019]s\b")
_SELF_CUE = re.compile(
    rf"(?i:\b(?:my\s+name\s+is|this\s+is|i\s+am|i'm|name:))[ \t]+{_NAME}",
)
_HONORIFICS = frozenset({"mr", "mrs", "ms", "miss", "dr", "prof"})
_NOT_NAMES = frozenset(
    [
        *_split(
            """the my our your their his her this that these those a an team support order orders
            hi hello hey dear thanks thank please it hr access account admin new hire starter
            joiner employee manager user staff customer service desk helpdesk help urgent asap re
            fw fwd ok yes no i we you he she they today tomorrow yesterday morning next last
            project group channel site department office building floor room client program
            programme portal workspace folder"""
        ),
        *_WEEKDAYS,
        *_MONTH_NUMBERS,
    ]
)
# Names count only in messages that look like employee-service requests.
_EMPLOYEE_SERVICE = re.compile(
    r"\b(?:access|accounts?|log\s?in|login|password|laptop|onboard\w*|offboard\w*|new\s+hire"
    r"|new\s+starter|new\s+joiner|starts?\s+on|start\s+date|last\s+day|leaver|permissions?"
    r"|licen[cs]es?|seats?|mailbox|badge|payroll|vacation|leave|employee|contractor"
    r"|admin\s+rights|read-only|edit\s+rights|rights|role|group)\b",
    re.IGNORECASE,
)


def _canonical_employee_id(raw: str) -> str:
    value = raw.upper()
    match = re.fullmatch(r"([A-Z]+)-?(\d+)", value)
    return f"{match.group(1)}-{match.group(2)}" if match else value


def _clean_name(candidate: str, systems: list[tuple[int, int, str]], start: int) -> str | None:
    """The person's name in a cue match, or None when it is not one."""
    tokens = candidate.split()
    while tokens and tokens[0].lower().rstrip(".") in _HONORIFICS:
        tokens = tokens[1:]
    kept: list[str] = []
    for token in tokens:
        if token.lower() in _NOT_NAMES or len(token) < 2:
            break
        kept.append(token)
    if len(kept) < 2:
        return None
    # "for Google Drive", "for Microsoft Teams": a system, not a person.
    name_start = start + candidate.index(kept[0])
    if any(system_start == name_start for system_start, _, _ in systems):
        return None
    return " ".join(kept)


def _names(
    pattern: re.Pattern[str], text: str, systems: list[tuple[int, int, str]]
) -> list[tuple[int, int, str]]:
    names: list[tuple[int, int, str]] = []
    for match in pattern.finditer(text):
        name = _clean_name(match.group("name"), systems, match.start("name"))
        if name is not None:
            names.append((match.start("name"), match.start("name") + len(name), name))
    return names


# --- Putting it together ------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")


_Span = TypeVar("_Span", Money, FoundDate)
_T = TypeVar("_T")


def _non_overlapping(items: list[_Span]) -> list[_Span]:
    """Earliest first, and the longest of those starting together; drop what overlaps them."""
    chosen: list[_Span] = []
    for item in sorted(items, key=lambda item: (item.start, item.start - item.end)):
        if not chosen or item.start >= chosen[-1].end:
            chosen.append(item)
    return chosen


def _masked(text: str, spans: Iterable[tuple[int, int]]) -> str:
    characters = list(text)
    for start, end in spans:
        characters[start:end] = " " * (end - start)
    return "".join(characters)


def _first(values: Sequence[_T]) -> tuple[_T | None, float]:
    """The first value and its certainty: 1/k for k distinct values, 0 when there are none."""
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return None, 0.0
    return distinct[0], 1.0 / len(distinct)


def extract_fields(
    text: str,
    *,
    today: date | None = None,
    expected: Iterable[str] | None = None,
    systems_file: Path | None = None,
) -> ExtractedFields:
    """The fields in `text` (see the module docstring for the rules and the confidence).

    `today` resolves relative and year-less dates (default: the machine's date); `expected`
    names the fields (of `EXTRACTED_FIELD_NAMES`) the caller needs; `systems_file` replaces
    `datasets/extraction/systems.txt` (read once per path, then cached).
    """
    expected_fields = None if expected is None else list(dict.fromkeys(expected))
    unknown = set(expected_fields or ()) - set(EXTRACTED_FIELD_NAMES)
    if unknown:
        raise ValueError(f"unknown expected fields: {', '.join(sorted(unknown))}")
    text = unicodedata.normalize("NFKC", text[:MAX_EXTRACTED_CHARS])
    certainty: dict[str, float] = {}

    amounts = find_amounts(text)
    amount, certainty["amount_cents"] = _first([(m.cents, m.currency) for m in amounts])
    certainty["currency"] = certainty["amount_cents"]

    found_dates = find_dates(text, today)
    dates = list(dict.fromkeys(found.value for found in found_dates))
    certainty["dates"] = (
        0.0
        if not dates
        else _AMBIGUOUS_DATE_CERTAINTY
        if any(found.ambiguous for found in found_dates)
        else 1.0
    )

    catalog = _systems(systems_file or SYSTEMS_FILE)
    systems = catalog.find(text)
    id_matches = list(_EMPLOYEE_ID.finditer(text))
    ids = [_canonical_employee_id(m.group("cued") or m.group("canonical")) for m in id_matches]
    people: list[list[tuple[int, int, str]]] = [[], [], []]
    if systems or _EMPLOYEE_SERVICE.search(text):
        people = [_names(cue, text, systems) for cue in (_SUBJECT_CUE, _POSSESSIVE, _SELF_CUE)]
    tiers = [ids] + [[name for _, _, name in tier] for tier in people]
    chosen: list[str] = next((tier for tier in tiers if tier), [])
    employee, certainty["employee"] = _first(chosen)
    # "for Tom Jenkins" names a person, not the Jenkins server.
    spans = [(start, end) for tier in people for start, end, _ in tier]
    systems = [
        system for system in systems if not any(start <= system[0] < end for start, end in spans)
    ]
    system_name, certainty["system_name"] = _first([name for _, _, name in systems])

    # An employee number ("employee #40021") or a system ("O365") is not an order reference.
    masked = _masked(text, [m.span() for m in id_matches] + [s[:2] for s in systems])
    order_id, certainty["order_id"] = _first(extract_order_ids(masked))

    emails = [match.group(0) for match in _EMAIL.finditer(text)]
    _, certainty["email"] = _first([email.lower() for email in emails])

    fields = expected_fields or [name for name in EXTRACTED_FIELD_NAMES if certainty[name] > 0]
    confidence = sum(certainty[name] for name in fields) / len(fields) if fields else 0.0
    return ExtractedFields(
        order_id=order_id,
        amount_cents=amount[0] if amount else None,
        currency=amount[1] if amount else None,
        dates=dates,
        employee=employee,
        system_name=system_name,
        email=emails[0] if emails else None,
        confidence=round(confidence, 4),
        model=f"embedded:rules-extract@{catalog.digest}",
    )
