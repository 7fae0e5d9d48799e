"""Held-out evaluation of the intent classifier.

    python -m activities.intelligence.evaluate [--no-embeddings] [--errors]

Trains exactly as a worker does, then prints the training time, accuracy, macro-F1, a
per-intent report and the most frequent confusions on `datasets/intents/heldout.jsonl`.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sklearn.metrics import accuracy_score, classification_report, f1_score

from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, HELDOUT_FILE, EmbeddedModels
from activities.intelligence.intent import IntentExample, load_examples
from activities.types import Intent

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    examples: list[IntentExample]
    predicted: list[tuple[Intent, float]]
    accuracy: float
    macro_f1: float

    def errors(self) -> list[tuple[IntentExample, Intent, float]]:
        return [
            (example, intent, confidence)
            for example, (intent, confidence) in zip(self.examples, self.predicted, strict=True)
            if intent is not example.intent
        ]


def evaluate(models: EmbeddedModels, heldout: Path | None = None) -> Evaluation:
    examples = load_examples(heldout or DEFAULT_DATASETS_DIR / HELDOUT_FILE)
    predicted = models.classify_intents([example.text for example in examples])
    expected = [example.intent.value for example in examples]
    labels = [intent.value for intent, _ in predicted]
    return Evaluation(
        examples=examples,
        predicted=predicted,
        accuracy=float(accuracy_score(expected, labels)),
        macro_f1=float(f1_score(expected, labels, average="macro")),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-embeddings", action="store_true", help="TF-IDF features only")
    parser.add_argument("--errors", action="store_true", help="list every misclassified text")
    parser.add_argument("--heldout", type=Path, default=None, help="another JSONL file")
    args = parser.parse_args()

    models = EmbeddedModels.load(word_embeddings=not args.no_embeddings)
    result = evaluate(models, args.heldout)
    expected = [example.intent.value for example in result.examples]
    labels = [intent.value for intent, _ in result.predicted]
    print(f"model          {models.intent_model}")
    print(
        f"training       {models.training_cpu_seconds:.2f} s CPU "
        f"({models.training_seconds:.2f} s wall)"
    )
    print(f"held-out       {len(result.examples)} examples")
    print(f"accuracy       {result.accuracy:.3f}")
    print(f"macro-F1       {result.macro_f1:.3f}")
    print()
    print(classification_report(expected, labels, digits=3, zero_division=0))
    confusions = Counter((ex.intent.value, got.value) for ex, got, _ in result.errors())
    for (truth, got), count in confusions.most_common(10):
        print(f"{count:3d}  {truth} -> {got}")
    if args.errors:
        print()
        for example, got, confidence in result.errors():
            print(f"{example.intent.value:>17} -> {got.value:<17} {confidence:.2f}  {example.text}")


if __name__ == "__main__":
    main()
