"""Retrieval hit rate of the knowledge base on a labelled question set.

    .venv/bin/python -m bench.knowledge                 # hit@1, hit@3; results/knowledge.json
    .venv/bin/python -m bench.knowledge --bm25-only     # without the embeddings

`datasets/knowledge/questions.jsonl`: one JSON object a line, `question` and `doc` (the id of the
document that answers it, or null for a question the knowledge base cannot answer). hit@k is
the share of answerable questions whose document is among the first k found; the confidence of
each question is reported with the share of answerable questions at or above the policy's
threshold (answered with no person) and of unanswerable ones below it (sent to a person).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from activities.knowledge import DEFAULT_KNOWLEDGE_DIR, KnowledgeBase

__all__ = ["evaluate", "main"]

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "datasets" / "knowledge" / "questions.jsonl"
POLICY = ROOT / "policies" / "knowledge_answer.yaml"
OUTPUT = ROOT / "results" / "knowledge.json"


def evaluate(
    knowledge: KnowledgeBase, questions: list[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    rows = []
    for item in questions:
        found = knowledge.search(item["question"], top_k=3)
        ids = [hit.doc_id for hit in found.hits]
        rows.append(
            {
                "question": item["question"],
                "expected": item["doc"],
                "found": ids,
                "confidence": found.confidence,
                "hit_at_1": item["doc"] is not None and ids[:1] == [item["doc"]],
                "hit_at_3": item["doc"] is not None and item["doc"] in ids,
            }
        )
    answerable = [row for row in rows if row["expected"] is not None]
    unanswerable = [row for row in rows if row["expected"] is None]
    confident = [row for row in answerable if row["confidence"] >= threshold]
    return {
        "model": knowledge.model,
        "index_version": knowledge.version,
        "documents": len(knowledge.documents),
        "questions": len(answerable),
        "unanswerable_questions": len(unanswerable),
        "hit_at_1": round(sum(row["hit_at_1"] for row in answerable) / len(answerable), 4),
        "hit_at_3": round(sum(row["hit_at_3"] for row in answerable) / len(answerable), 4),
        "threshold": threshold,
        "answered_without_a_person": round(len(confident) / len(answerable), 4),
        "answered_without_a_person_correct": round(
            sum(row["hit_at_1"] for row in confident) / len(confident), 4
        )
        if confident
        else None,
        "unanswerable_sent_to_a_person": round(
            sum(row["confidence"] < threshold for row in unanswerable) / len(unanswerable), 4
        )
        if unanswerable
        else None,
        "misses": [row for row in answerable if not row["hit_at_1"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--knowledge", type=Path, default=DEFAULT_KNOWLEDGE_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--bm25-only", action="store_true", help="no embeddings")
    args = parser.parse_args(argv)
    questions = [
        json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()
    ]
    threshold = float(yaml.safe_load(POLICY.read_text())["min_confidence"])
    knowledge = KnowledgeBase.load(args.knowledge, embeddings=not args.bm25_only)
    report = evaluate(knowledge, questions, threshold)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['model']}: {report['questions']} questions, {report['documents']} documents\n"
        f"hit@1 {report['hit_at_1']:.3f}  hit@3 {report['hit_at_3']:.3f}\n"
        f"confidence >= {threshold}: {report['answered_without_a_person']:.1%} answered with no "
        f"person ({report['answered_without_a_person_correct']} right); "
        f"unanswerable sent to a person: {report['unanswerable_sent_to_a_person']}\n"
        f"written to {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
