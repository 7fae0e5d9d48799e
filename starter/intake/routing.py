"""The intake's routing table (`policies/routing.yaml`) and the pure decision it makes.

`RoutingTable` is the file's shape (unknown fields refused, like every policy file; `podium
policy check` validates it). `decide(table, facts, registered)` turns what the intake learnt of
a message (intent, confidence, sender kind, the facts found in its text) into the process it
opens and, when that is a person's handoff, why. No I/O here: the unit tests and the accuracy
bench call it directly.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from activities.types import Intent

__all__ = [
    "FACTS",
    "MessageFacts",
    "Route",
    "RouteDecision",
    "RoutingTable",
    "SenderKind",
    "SpikeRule",
    "decide",
    "is_question",
    "load_routing",
]

ROUTING_FILE_STEM = "routing"
# The facts a route may require, as the intake finds them in a message.
FACTS = ("order_id", "application")
Fact = Literal["order_id", "application"]
_PROCESS = r"^[a-z][a-z0-9_]{0,63}$"


class SenderKind(StrEnum):
    CUSTOMER = "customer"
    EMPLOYEE = "employee"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Route(_Strict):
    intents: list[Intent] = Field(min_length=1)
    process: str = Field(pattern=_PROCESS)
    sender: Literal["customer", "employee", "any"] = "any"
    requires: list[Fact] = Field(default_factory=list)
    # A question missing the required facts goes to the table's `questions` process.
    questions: bool = False


class SpikeRule(_Strict):
    max_messages: int = Field(ge=1, le=10_000_000)
    window: timedelta = Field(gt=timedelta(0), le=timedelta(days=1))


class RoutingTable(_Strict):
    """`policies/routing.yaml`; `digest` is the short sha256 of the file (set by the loader)."""

    version: str = Field(min_length=1, max_length=64)
    digest: str = Field(default="", max_length=64)
    min_confidence: float = Field(ge=0, le=1)
    fallback: str = Field(pattern=_PROCESS)
    questions: str | None = Field(default=None, pattern=_PROCESS)
    routes: list[Route] = Field(min_length=1)
    spike: SpikeRule

    @model_validator(mode="after")
    def _one_route_per_intent(self) -> RoutingTable:
        seen: set[Intent] = set()
        for route in self.routes:
            twice = seen.intersection(route.intents)
            if twice:
                raise ValueError(f"intent {sorted(twice)[0]} is routed twice")
            seen.update(route.intents)
        return self

    def route_of(self, intent: Intent) -> Route | None:
        return next((route for route in self.routes if intent in route.intents), None)


@dataclass(frozen=True)
class MessageFacts:
    """What the intake learnt of one message before routing it."""

    intent: Intent
    confidence: float
    sender: SenderKind
    found: frozenset[str]  # the FACTS found in the text
    question: bool


@dataclass(frozen=True)
class RouteDecision:
    process: str
    intent: Intent
    # Why the message goes to the fallback (a person), None when its route took it.
    reason: str | None = None


def decide(table: RoutingTable, facts: MessageFacts, registered: Collection[str]) -> RouteDecision:
    """The process `facts` open under `table`, given the `registered` process names."""

    def fallback(reason: str) -> RouteDecision:
        return RouteDecision(table.fallback, facts.intent, reason)

    if facts.confidence < table.min_confidence:
        return fallback(f"intent unsure ({facts.intent} at {facts.confidence:.2f})")
    route = table.route_of(facts.intent)
    if route is None:
        return fallback(f"no process handles {facts.intent}")
    if route.process not in registered:
        return fallback(f"{facts.intent}: process {route.process} is not available")
    if route.sender != "any" and route.sender != facts.sender:
        return fallback(f"{facts.intent} is for {route.sender}s; the sender is a {facts.sender}")
    missing = [fact for fact in route.requires if fact not in facts.found]
    if missing:
        if route.questions and facts.question and table.questions and table.questions in registered:
            return RouteDecision(table.questions, facts.intent)
        return fallback(f"{facts.intent} without {' or '.join(missing).replace('_', ' ')}")
    return RouteDecision(route.process, facts.intent)


_QUESTION_OPENING = re.compile(
    r"^\s*(how|what|when|where|which|who|why|can|could|do|does|is|are|will|would|should|may)\b",
    re.IGNORECASE,
)


def is_question(text: str) -> bool:
    """A message phrased as a question: a question mark, or a question word first."""
    return "?" in text or bool(_QUESTION_OPENING.match(text))


def load_routing(path: Path) -> RoutingTable:
    """The routing file, validated, with its digest; `PolicyError` naming file and fields."""
    from starter.client import parse_policy_as

    return RoutingTable.model_validate(parse_policy_as(path, RoutingTable))
