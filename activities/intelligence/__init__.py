"""Embedded, offline intelligence: intent classification, sentiment, order ids, reply drafting."""

from activities.intelligence.embedded import EmbeddedModels
from activities.intelligence.replies import format_amount
from activities.intelligence.text import extract_order_ids

__all__ = ["EmbeddedModels", "extract_order_ids", "format_amount"]
