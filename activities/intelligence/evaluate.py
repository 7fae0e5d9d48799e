"""Offline evaluation of the intent classifier: cross-validation on the training examples and
scores on the separately written test set.

    python -m activities.intelligence.evaluate [--no-embeddings] [--errors] [--folds 5]
                                               [--write results/]

Prints, per intent, the cross-validated accuracy over `datasets/intents/train.jsonl` and the
accuracy on `datasets/intents/test.jsonl` (which never trains or tunes anything), then the
calibration on the test set (expected calibration error) and the automation threshold: chosen
on the out-of-fold predictions, reported with its precision and human share on the test set.
`--write DIR` also writes `intent-evaluation.{json,md}` and the reliability diagram
`intent-evaluation-reliability.svg` there.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TEST_FILE, TRAIN_FILE
from activities.intelligence.evaluation import (
    TARGET_AUTOMATED_PRECISION,
    calibration_lines,
    choose_threshold,
    expected_calibration_error,
    markdown_table,
    reliability_bins,
    reliability_svg,
)
from activities.intelligence.intent import (
    AUTOMATION_THRESHOLD,
    IntentClassifier,
    IntentExample,
    _WordEmbedder,
    load_examples,
)
from activities.types import Intent

__all__ = ["Evaluation", "cross_validate", "evaluate", "evaluate_examples", "with_typos"]

CV_SEED = 0
TYPO_SEED = 0
# Share of the words of four letters or more that get one typo in the robustness check.
TYPO_RATE = 0.3


def with_typos(text: str, rng: random.Random, rate: float = TYPO_RATE) -> str:
    """`text` with one typo (a letter dropped, doubled, swapped with the next, or replaced by
    its keyboard neighbour's stand-in, a random letter) in about `rate` of its longer words."""
    words = text.split(" ")
    for index, word in enumerate(words):
        if len(word) < 4 or not word.isalpha() or rng.random() >= rate:
            continue
        at = rng.randrange(1, len(word) - 1)
        kind = rng.randrange(4)
        if kind == 0:
            word = word[:at] + word[at + 1 :]
        elif kind == 1:
            word = word[:at] + word[at] + word[at:]
        elif kind == 2:
            word = word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        else:
            word = word[:at] + rng.choice("abcdefghijklmnopqrstuvwxyz") + word[at + 1 :]
        words[index] = word
    return " ".join(words)


class _Models:
    """What `evaluate` needs of `EmbeddedModels` (or of a bare classifier)."""

    def classify_intents(self, texts: list[str]) -> list[tuple[Intent, float]]:
        raise NotImplementedError


@dataclass(frozen=True)
class Evaluation:
    examples: list[IntentExample]
    predicted: list[tuple[Intent, float]]

    @property
    def expected(self) -> list[str]:
        return [example.intent.value for example in self.examples]

    @property
    def labels(self) -> list[str]:
        return [intent.value for intent, _ in self.predicted]

    @property
    def correct(self) -> list[bool]:
        return [
            intent is example.intent
            for example, (intent, _) in zip(self.examples, self.predicted, strict=True)
        ]

    @property
    def confidences(self) -> list[float]:
        return [confidence for _, confidence in self.predicted]

    @property
    def accuracy(self) -> float:
        return float(accuracy_score(self.expected, self.labels))

    @property
    def macro_f1(self) -> float:
        return float(f1_score(self.expected, self.labels, average="macro"))

    @property
    def ece(self) -> float:
        return expected_calibration_error(self.confidences, self.correct)

    def per_intent(self) -> dict[str, tuple[int, float]]:
        """Intent -> (examples, accuracy on them)."""
        totals: Counter[str] = Counter()
        right: Counter[str] = Counter()
        for truth, ok in zip(self.expected, self.correct, strict=True):
            totals[truth] += 1
            right[truth] += ok
        return {label: (totals[label], right[label] / totals[label]) for label in sorted(totals)}

    def confident_errors(self, at_least: float = 0.8) -> int:
        return sum(
            not ok and confidence >= at_least
            for ok, confidence in zip(self.correct, self.confidences, strict=True)
        )

    def errors(self) -> list[tuple[IntentExample, Intent, float]]:
        return [
            (example, intent, confidence)
            for example, (intent, confidence) in zip(self.examples, self.predicted, strict=True)
            if intent is not example.intent
        ]

    def at_threshold(self, threshold: float) -> tuple[float, float]:
        """(precision of the automated answers, share sent to a person) at `threshold`."""
        kept = [ok for ok, c in zip(self.correct, self.confidences, strict=True) if c >= threshold]
        n = len(self.examples)
        return (sum(kept) / len(kept) if kept else float("nan"), (n - len(kept)) / n)


def evaluate_examples(models: _Models | Any, examples: Sequence[IntentExample]) -> Evaluation:
    predicted = models.classify_intents([example.text for example in examples])
    return Evaluation(list(examples), list(predicted))


def evaluate(models: _Models | Any, cases: Path | None = None) -> Evaluation:
    """Score `models` on the test set (or another labelled file)."""
    return evaluate_examples(models, load_examples(cases or DEFAULT_DATASETS_DIR / TEST_FILE))


def cross_validate(
    examples: Sequence[IntentExample],
    *,
    folds: int = 5,
    word_embeddings: bool = True,
    seed: int = CV_SEED,
) -> Evaluation:
    """Out-of-fold predictions: each example scored by a model trained without it."""
    embedder = _WordEmbedder() if word_embeddings else None
    labels = np.array([example.intent.value for example in examples])
    predicted: list[tuple[Intent, float] | None] = [None] * len(examples)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, test_index in splitter.split(np.zeros(len(labels)), labels):
        model = IntentClassifier.train(
            [examples[i] for i in train_index], word_embeddings=word_embeddings, embedder=embedder
        )
        for i, result in zip(
            test_index, model.predict_many([examples[i].text for i in test_index]), strict=True
        ):
            predicted[int(i)] = result
    return Evaluation(list(examples), [p for p in predicted if p is not None])


def _report(
    cv: Evaluation, test: Evaluation, typos: Evaluation, model: str, seconds: float
) -> dict[str, Any]:
    cv_intents, test_intents = cv.per_intent(), test.per_intent()
    chosen = choose_threshold(cv.confidences, cv.correct)
    precision, human = test.at_threshold(AUTOMATION_THRESHOLD)
    return {
        "model": model,
        "training_cpu_seconds": round(seconds, 2),
        "train_examples": len(cv.examples),
        "test_examples": len(test.examples),
        "cv": {
            "accuracy": round(cv.accuracy, 4),
            "macro_f1": round(cv.macro_f1, 4),
            "ece": round(cv.ece, 4),
            "confident_errors_at_0.8": cv.confident_errors(),
        },
        "test": {
            "accuracy": round(test.accuracy, 4),
            "macro_f1": round(test.macro_f1, 4),
            "ece": round(test.ece, 4),
            "confident_errors_at_0.8": test.confident_errors(),
        },
        "test_with_typos": {
            "typo_rate": TYPO_RATE,
            "accuracy": round(typos.accuracy, 4),
            "macro_f1": round(typos.macro_f1, 4),
            "ece": round(typos.ece, 4),
        },
        "threshold": {
            "target_precision": TARGET_AUTOMATED_PRECISION,
            "chosen_on_cv": None if chosen is None else chosen.threshold,
            "cv_precision": None if chosen is None else round(chosen.precision, 4),
            "cv_human_share": None if chosen is None else round(chosen.human_share, 4),
            "used": AUTOMATION_THRESHOLD,
            "test_precision": round(precision, 4),
            "test_human_share": round(human, 4),
        },
        "per_intent": {
            label: {
                "train_examples": cv_intents[label][0],
                "cv_accuracy": round(cv_intents[label][1], 4),
                "test_examples": test_intents.get(label, (0, float("nan")))[0],
                "test_accuracy": round(test_intents.get(label, (0, float("nan")))[1], 4),
            }
            for label in cv_intents
        },
    }


def _markdown(data: dict[str, Any], cv: Evaluation, test: Evaluation) -> str:
    threshold = data["threshold"]
    lines = [
        "# Intent classifier: cross-validation and test set",
        "",
        f"Model `{data['model']}`, {data['train_examples']} training examples "
        f"(5-fold cross-validation, seed {CV_SEED}), {data['test_examples']} test messages "
        "written separately (`datasets/intents/test.jsonl`, never used for training or tuning).",
        "Written by `python -m activities.intelligence.evaluate --write results/`.",
        "",
        "| | accuracy | macro-F1 | ECE | wrong with confidence >= 0.8 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in ("cv", "test"):
        row = data[name]
        lines.append(
            f"| {'cross-validation' if name == 'cv' else 'test set'} | {row['accuracy']:.3f} | "
            f"{row['macro_f1']:.3f} | {row['ece']:.3f} | {row['confident_errors_at_0.8']} |"
        )
    typos = data["test_with_typos"]
    lines.append(
        f"| test set with typos ({typos['typo_rate']:.0%} of the longer words misspelt) | "
        f"{typos['accuracy']:.3f} | {typos['macro_f1']:.3f} | {typos['ece']:.3f} | - |"
    )
    lines += [
        "",
        f"Automation threshold {threshold['used']:.2f} (lowest grid point where out-of-fold "
        f"answers are right >= {TARGET_AUTOMATED_PRECISION:.0%}: {threshold['chosen_on_cv']}, "
        f"precision {threshold['cv_precision']}, {threshold['cv_human_share']:.1%} to a person). "
        f"On the test set: precision {threshold['test_precision']:.3f}, "
        f"{threshold['test_human_share']:.1%} to a person.",
        "",
        "## Per intent",
        "",
    ]
    lines += markdown_table(
        ["intent", "train", "CV accuracy", "test", "test accuracy"],
        [
            [
                label,
                str(row["train_examples"]),
                f"{row['cv_accuracy']:.3f}",
                str(row["test_examples"]),
                f"{row['test_accuracy']:.3f}",
            ]
            for label, row in data["per_intent"].items()
        ],
    )
    lines += [
        "",
        "## Calibration on the test set",
        "",
        "![reliability](intent-evaluation-reliability.svg)",
    ]
    lines += ["", *calibration_lines(test.confidences, test.correct)]
    lines += ["", "## Calibration out of fold (training examples)", ""]
    lines += calibration_lines(cv.confidences, cv.correct)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--no-embeddings", action="store_true", help="TF-IDF features only")
    parser.add_argument("--errors", action="store_true", help="list every misclassified text")
    parser.add_argument("--cases", type=Path, default=None, help="another labelled JSONL file")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None, help="folder for the result files")
    args = parser.parse_args()

    train = load_examples(DEFAULT_DATASETS_DIR / TRAIN_FILE)
    started = time.process_time()
    model = IntentClassifier.train(train, word_embeddings=not args.no_embeddings)
    seconds = time.process_time() - started
    test = evaluate_examples(
        model_adapter(model), load_examples(args.cases or DEFAULT_DATASETS_DIR / TEST_FILE)
    )
    rng = random.Random(TYPO_SEED)
    typos = evaluate_examples(
        model_adapter(model),
        [IntentExample(with_typos(e.text, rng), e.intent) for e in test.examples],
    )
    cv = cross_validate(train, folds=args.folds, word_embeddings=not args.no_embeddings)
    data = _report(cv, test, typos, model.name, seconds)
    print(json.dumps({key: value for key, value in data.items() if key != "per_intent"}, indent=2))
    print()
    print(f"{'intent':<17} {'train':>5} {'CV acc':>7} {'test':>5} {'test acc':>8}")
    for label, row in data["per_intent"].items():
        print(
            f"{label:<17} {row['train_examples']:>5} {row['cv_accuracy']:>7.3f} "
            f"{row['test_examples']:>5} {row['test_accuracy']:>8.3f}"
        )
    if args.errors:
        print()
        for example, got, confidence in test.errors():
            print(f"{example.intent.value:>17} -> {got.value:<17} {confidence:.2f}  {example.text}")
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        (args.write / "intent-evaluation.json").write_text(json.dumps(data, indent=2) + "\n")
        (args.write / "intent-evaluation.md").write_text(_markdown(data, cv, test))
        svg = reliability_svg(
            reliability_bins(test.confidences, test.correct),
            title=f"Intent confidence on the test set ({len(test.examples)} messages)",
            ece=test.ece,
        )
        (args.write / "intent-evaluation-reliability.svg").write_text(svg)
        print(
            f"wrote {args.write}/intent-evaluation.{{json,md}}, intent-evaluation-reliability.svg"
        )


def model_adapter(model: IntentClassifier) -> Any:
    """A bare classifier with the `classify_intents` of `EmbeddedModels`."""

    class _Adapter:
        def classify_intents(self, texts: list[str]) -> list[tuple[Intent, float]]:
            return model.predict_many(texts)

    return _Adapter()


if __name__ == "__main__":
    main()
