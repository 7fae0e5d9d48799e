"""The intake's routing table and routing accuracy: the file validates like every policy file,
`decide` sends what it cannot route to a person with the reason, and the labelled messages of
`datasets/intake/messages.jsonl` reach their process."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.intelligence import EmbeddedModels
from activities.types import Intent
from bench.intake import DEFAULT_MESSAGES, evaluate, load_messages
from core.policy import DEFAULT_POLICIES_DIR, PolicyError
from starter.intake.routing import MessageFacts, SenderKind, decide, is_question, load_routing
from workflows.registry import PROCESSES

ROUTING = DEFAULT_POLICIES_DIR / "routing.yaml"
ALL = PROCESSES.names


def _facts(
    intent: Intent,
    confidence: float = 0.9,
    sender: SenderKind = SenderKind.CUSTOMER,
    found: frozenset[str] = frozenset(),
    question: bool = False,
) -> MessageFacts:
    return MessageFacts(intent, confidence, sender, found, question)


def test_the_routing_file_loads_with_its_digest() -> None:
    table = load_routing(ROUTING)
    assert 12 == len(table.digest)
    assert "refund" == table.route_of(Intent.REFUND_REQUEST).process  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        ("surprise: 1\n", "surprise: unknown field"),
        ("min_confidence: 2\n", "min_confidence"),
        ("routes:\n  - {intents: [order_status], process: refund}\n"
         "  - {intents: [order_status], process: handoff}\n", "routed twice"),
    ],
)  # fmt: skip
def test_a_bad_routing_file_is_refused_naming_the_field(
    tmp_path: Path, edit: str, error: str
) -> None:
    import yaml

    document = yaml.safe_load(ROUTING.read_text())
    document.update(yaml.safe_load(edit))
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(PolicyError) as raised:
        load_routing(path)
    assert error in "\n".join(raised.value.errors)


def test_decisions() -> None:
    table = load_routing(ROUTING)
    order = frozenset({"order_id"})
    assert ("refund", None) == _pair(decide(table, _facts(Intent.REFUND_REQUEST, found=order), ALL))
    unsure = decide(table, _facts(Intent.REFUND_REQUEST, 0.2, found=order), ALL)
    assert "handoff" == unsure.process and "unsure" in (unsure.reason or "")
    no_order = decide(table, _facts(Intent.REFUND_REQUEST), ALL)
    assert ("handoff", "refund_request without order id") == _pair(no_order)
    question = decide(table, _facts(Intent.REFUND_REQUEST, question=True), ALL)
    assert ("knowledge_answer", None) == _pair(question)
    # A route whose process is not registered goes to a person.
    without = [name for name in ALL if name != "order_inquiry"]
    late = decide(table, _facts(Intent.ORDER_STATUS, found=order), without)
    assert "handoff" == late.process and "not available" in (late.reason or "")
    customer_reset = decide(table, _facts(Intent.PASSWORD_RESET), ALL)
    assert "handoff" == customer_reset.process and "employees" in (customer_reset.reason or "")
    employee = decide(table, _facts(Intent.PASSWORD_RESET, sender=SenderKind.EMPLOYEE), ALL)
    assert ("password_reset", None) == _pair(employee)
    assert "handoff" == decide(table, _facts(Intent.COMPLAINT), ALL).process


def _pair(decision: object) -> tuple[str, str | None]:
    return decision.process, decision.reason  # type: ignore[attr-defined]


def test_questions() -> None:
    assert is_question("what is your refund policy")
    assert is_question("Refund policy for opened items?")
    assert not is_question("I want a refund for O-5004")


@pytest.mark.timeout(120)
def test_routing_accuracy_on_the_labelled_messages() -> None:
    messages = load_messages(DEFAULT_MESSAGES)
    assert len(messages) >= 50
    report = evaluate(messages, EmbeddedModels.load(), load_routing(ROUTING))
    assert {"refund", "order_inquiry", "password_reset", "access_request",
            "knowledge_answer", "handoff"} == set(report.per_route)  # fmt: skip
    low = {route: f["accuracy"] for route, f in report.per_route.items() if f["accuracy"] < 0.8}
    assert {} == low, report.misrouted
    assert report.accuracy >= 0.9, report.misrouted
