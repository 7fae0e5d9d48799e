"""Customer replies rendered from the Jinja2 templates in `templates/replies/`.

Templates are plain text (no HTML escaping) and use `StrictUndefined`, so a misspelt variable in
a template fails loudly instead of leaving a gap in a message a customer will read. Every
template receives the same variables: `customer_name`, `order_id`, `amount` (already formatted,
e.g. "$129.00", or None), `amount_cents`, `currency`, `reason` and `case_id`. Optional values are
None when absent and templates leave their sentence out. Only `refund_rejected` shows `reason`,
verbatim, as the reason for the decision; elsewhere it may be an internal note (an SLA breach,
the customer's standing) and no template shows it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

from activities.types import DraftReplyInput

__all__ = ["ReplyTemplates", "format_amount"]

TEMPLATE_SUFFIX = ".j2"
_CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£"}
_BLANK_LINES = re.compile(r"\n{3,}")


def format_amount(amount_cents: int, currency: str = "USD") -> str:
    """`12900, "USD"` -> `"$129.00"`; currencies without a symbol: `"129.00 CAD"`."""
    code = currency.strip().upper()
    sign = "-" if amount_cents < 0 else ""
    units, cents = divmod(abs(amount_cents), 100)
    number = f"{units:,}.{cents:02d}"
    symbol = _CURRENCY_SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}"


class ReplyTemplates:
    """The reply templates of one directory, compiled once when the worker starts."""

    def __init__(self, directory: Path) -> None:
        paths = sorted(directory.glob(f"*{TEMPLATE_SUFFIX}"))
        if not paths:
            raise ValueError(f"no reply templates (*{TEMPLATE_SUFFIX}) in {directory}")
        environment = Environment(
            loader=FileSystemLoader(directory),
            undefined=StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        digest = hashlib.sha256()
        self._templates: dict[str, Template] = {}
        for path in paths:
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
            self._templates[path.name.removesuffix(TEMPLATE_SUFFIX)] = environment.get_template(
                path.name
            )
        self.name = f"embedded:jinja-replies@{digest.hexdigest()[:8]}"

    @property
    def names(self) -> list[str]:
        return sorted(self._templates)

    def render(self, request: DraftReplyInput) -> str:
        """The reply text; `ValueError` for an unknown template or an invalid amount."""
        template = self._templates.get(request.template)
        if template is None:
            raise ValueError(
                f"unknown reply template {request.template!r}; "
                f"known templates: {', '.join(self.names)}"
            )
        if request.amount_cents is not None and request.amount_cents < 0:
            raise ValueError(f"amount_cents must not be negative, got {request.amount_cents}")
        amount = (
            None
            if request.amount_cents is None
            else format_amount(request.amount_cents, request.currency)
        )
        text = template.render(
            customer_name=request.customer_name.strip() or "there",
            order_id=request.order_id,
            amount=amount,
            amount_cents=request.amount_cents,
            currency=request.currency,
            reason=(request.reason or "").strip() or None,
            case_id=request.case_id,
        )
        return _BLANK_LINES.sub("\n\n", text).strip()
