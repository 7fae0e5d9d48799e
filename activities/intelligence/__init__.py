"""Embedded, offline intelligence: intent classification, sentiment, order ids, reply drafting.

The names below load on first use (PEP 562): a worker that runs no model (role `cases`) imports
the gateway's configuration and error types without loading scikit-learn and the embedded
models' libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from activities.intelligence.embedded import EmbeddedModels
    from activities.intelligence.replies import format_amount
    from activities.intelligence.text import extract_order_ids

__all__ = ["EmbeddedModels", "extract_order_ids", "format_amount"]

_HOMES = {
    "EmbeddedModels": "activities.intelligence.embedded",
    "format_amount": "activities.intelligence.replies",
    "extract_order_ids": "activities.intelligence.text",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
