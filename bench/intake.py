"""Intake routing accuracy on a labelled message set: does each message reach the right process?

    python -m bench.intake [--messages FILE.jsonl] [--routing FILE.yaml] [--out FILE.json]

Each line of `datasets/intake/messages.jsonl` is `{"channel", "sender", "sender_kind",
"text", "process"}`: the process a person would route the message to. Every message goes
through what `POST /messages` does before a case exists: the embedded intent model, the facts
found in the text (order id, catalogue application, question or not) and the routing table
(`policies/routing.yaml`, `starter.intake.routing.decide`) over the registered processes.
Prints per-route accuracy (share of a route's messages routed there, with N) and writes JSON
(default `results/intake.json`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.policy import DEFAULT_POLICIES_DIR
from starter.intake.routing import RoutingTable, SenderKind, decide, load_routing
from starter.intake.service import Classifier, catalogue_applications, read_message
from workflows.registry import PROCESSES

__all__ = ["DEFAULT_MESSAGES", "RoutingReport", "evaluate", "main"]

DEFAULT_MESSAGES = Path(__file__).resolve().parent.parent / "datasets" / "intake" / "messages.jsonl"
DEFAULT_OUT = Path("results") / "intake.json"


@dataclass(frozen=True)
class RoutingReport:
    total: int
    correct: int
    per_route: dict[str, dict[str, Any]]
    confusion: dict[str, dict[str, int]]
    misrouted: list[dict[str, str]]
    routing_version: str

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.total,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 4),
            "routing_version": self.routing_version,
            "per_route": self.per_route,
            "confusion": self.confusion,
            "misrouted": self.misrouted,
        }


def load_messages(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate(
    messages: list[dict[str, str]], model: Classifier, table: RoutingTable
) -> RoutingReport:
    apps = catalogue_applications()
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    misrouted: list[dict[str, str]] = []
    for row in messages:
        facts, _, _ = read_message(model, row["text"], SenderKind(row["sender_kind"]), apps)
        routed = decide(table, facts, PROCESSES.names)
        confusion[row["process"]][routed.process] += 1
        if routed.process != row["process"]:
            misrouted.append(
                {
                    "text": row["text"],
                    "expected": row["process"],
                    "routed": routed.process,
                    "intent": f"{facts.intent} {facts.confidence:.2f}",
                }
            )
    per_route = {
        route: {
            "n": sum(counts.values()),
            "correct": counts[route],
            "accuracy": round(counts[route] / sum(counts.values()), 4),
        }
        for route, counts in sorted(confusion.items())
    }
    return RoutingReport(
        total=len(messages),
        correct=sum(counts[route] for route, counts in confusion.items()),
        per_route=per_route,
        confusion={route: dict(counts) for route, counts in sorted(confusion.items())},
        misrouted=misrouted,
        routing_version=table.digest,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__)
    parser.add_argument("--messages", type=Path, default=DEFAULT_MESSAGES)
    parser.add_argument("--routing", type=Path, default=DEFAULT_POLICIES_DIR / "routing.yaml")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    from activities.intelligence.embedded import EmbeddedModels

    report = evaluate(
        load_messages(args.messages), EmbeddedModels.load(), load_routing(args.routing)
    )
    print(
        f"routing {report.routing_version}: {report.correct}/{report.total} ({report.accuracy:.1%})"
    )
    for route, figures in report.per_route.items():
        print(f"  {route:<18} {figures['correct']:>3}/{figures['n']:<3} {figures['accuracy']:.1%}")
    for miss in report.misrouted:
        print(f"  misrouted: {miss['expected']} -> {miss['routed']} ({miss['intent']})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
