"""Candidate intent models side by side: accuracy, macro-F1, calibration, latency and size.

    python -m bench.intent_models [--folds 5] [--skip-startup] [--out results/]

Every candidate is trained on `datasets/intents/train.jsonl` and scored twice: 5-fold
cross-validation on the training examples, and the separately written test set
(`datasets/intents/test.jsonl`). Each candidate's probabilities are temperature-scaled with the
temperature that minimises the log-loss of its own out-of-fold scores, so that the calibration
columns compare like with like. Latency is the median CPU time to classify one message at a
time (normalisation, features, scores), on one thread with BLAS limited to one thread, over the
test messages. Size is the candidate's
stored arrays (vocabularies, IDF weights, coefficients), plus the 16 MB of WordLlama weights
inside the wheel for those that embed.

The start-up section times `EmbeddedModels.load()` in fresh interpreters: cold (no artefact:
the classifier is trained and stored) and warm (the artefact is loaded), three runs each.

Writes `intent-models.{json,md}` to `--out` (default `results/`).

    python -m bench.intent_models --fallback [--out results/]

instead compares routing tables for low-confidence messages on the test set, through the real
`ModelGateway` with the intent route's `min_confidence` at the automation threshold (0.8):
embedded only, embedded then an LLM (only messages the embedded model is unsure of go on),
and LLM only. THE LLMS ARE SIMULATED (`bench/routing.py`, `bench/simulated_llm.py`: `small`
is a weaker classifier, `premium` the embedded classifier itself, priced as the example
models file's gpt-4o-mini and gpt-4o); read cost per case and the share escalated, not their
accuracy. Writes `intent-fallback.{json,md}`.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix, hstack
from scipy.special import log_softmax, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_limits

from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TEST_FILE, TRAIN_FILE
from activities.intelligence.evaluation import expected_calibration_error
from activities.intelligence.intent import _WordEmbedder, load_examples
from activities.intelligence.text import normalize_for_intent

WORDLLAMA_WEIGHTS_BYTES = 16_384_096
SEED = 0
STARTUP_RUNS = 3


class Candidate:
    """A model family: `fit` on normalised texts, then `logits` for new ones."""

    name = ""
    description = ""
    embeds = False

    def __init__(self, embedder: _WordEmbedder) -> None:
        self.embedder = embedder
        self.arrays: dict[str, Any] = {}

    def fit(self, texts: list[str], labels: np.ndarray) -> None:
        raise NotImplementedError

    def logits(self, texts: list[str]) -> Any:
        raise NotImplementedError

    def size_bytes(self) -> int:
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays)
        return buffer.tell() + (WORDLLAMA_WEIGHTS_BYTES if self.embeds else 0)


def _word() -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"
    )


def _chars() -> TfidfVectorizer:
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)


class _Linear(Candidate):
    """TF-IDF word 1-2 and char 2-5 n-grams, optionally with WordLlama at `weight`."""

    weight = 0.0
    svm = False

    def _matrix(self, texts: list[str], fit: bool) -> Any:
        if fit:
            self.vectorizers = [_word(), _chars()] if self.weight < 10 else []
        blocks = [
            vectorizer.fit_transform(texts) if fit else vectorizer.transform(texts)
            for vectorizer in self.vectorizers
        ]
        if self.weight:
            embedded = np.asarray(self.embedder.embed(texts), dtype=np.float64)
            blocks.append(csr_matrix(embedded * (1.0 if self.weight >= 10 else self.weight)))
        return hstack(blocks, format="csr")

    def fit(self, texts: list[str], labels: np.ndarray) -> None:
        matrix = self._matrix(texts, fit=True)
        model = LinearSVC(C=0.5) if self.svm else LogisticRegression(C=20.0, max_iter=3000)
        with threadpool_limits(limits=1):
            model.fit(matrix, labels)
        self.model = model
        self.arrays = {"coef": model.coef_, "intercept": model.intercept_}
        for index, vectorizer in enumerate(self.vectorizers):
            vocabulary = vectorizer.vocabulary_
            self.arrays[f"terms{index}"] = np.array(sorted(vocabulary, key=vocabulary.get))
            self.arrays[f"idf{index}"] = vectorizer.idf_

    def logits(self, texts: list[str]) -> Any:
        return self.model.decision_function(self._matrix(texts, fit=False))


class TfidfLR(_Linear):
    name = "tfidf-lr"
    description = "TF-IDF word 1-2 + char 2-5 n-grams, logistic regression (C=20)"


class TfidfWordLlamaLR(_Linear):
    name = "tfidf+wordllama-lr (used)"
    description = "the same + WordLlama embeddings at weight 0.25"
    weight = 0.25
    embeds = True


class TfidfWordLlamaLR50(_Linear):
    name = "tfidf+wordllama0.5-lr"
    description = "the same, embeddings at weight 0.5"
    weight = 0.5
    embeds = True


class TfidfWordLlamaSVM(_Linear):
    name = "tfidf+wordllama-svm"
    description = "TF-IDF + WordLlama (0.5), linear SVM (C=0.5), scores softmaxed"
    weight = 0.5
    svm = True
    embeds = True


class WordLlamaLR(_Linear):
    name = "wordllama-lr"
    description = "WordLlama embeddings alone, logistic regression"
    weight = 10.0
    embeds = True


class Ensemble(Candidate):
    """Two models, log-probabilities averaged: n-grams (0.8) and embeddings (0.2)."""

    name = "ensemble"
    description = "tfidf-lr and wordllama-lr, log-probabilities averaged 0.8 / 0.2"
    embeds = True

    def fit(self, texts: list[str], labels: np.ndarray) -> None:
        self.parts = [TfidfLR(self.embedder), WordLlamaLR(self.embedder)]
        for part in self.parts:
            part.fit(texts, labels)
        self.arrays = {f"{i}{k}": v for i, p in enumerate(self.parts) for k, v in p.arrays.items()}

    def logits(self, texts: list[str]) -> Any:
        first, second = (log_softmax(part.logits(texts), axis=1) for part in self.parts)
        return 0.8 * first + 0.2 * second


class TwoStage(Candidate):
    """Customer (CX) or employee (EX) message first, then the intent within that group."""

    name = "two-stage"
    description = "CX/EX logistic regression, then tfidf+wordllama-lr within the group"
    embeds = True
    EMPLOYEE = frozenset({"access_request", "hardware_request", "hr_question"})

    def fit(self, texts: list[str], labels: np.ndarray) -> None:
        self.classes = np.array(sorted(set(labels)))
        group = np.array([label in self.EMPLOYEE for label in labels])
        self.router = TfidfWordLlamaLR(self.embedder)
        self.router.fit(texts, np.where(group, "ex", "cx"))
        self.experts = {}
        for name, mask in (("ex", group), ("cx", ~group)):
            expert = TfidfWordLlamaLR(self.embedder)
            expert.fit([t for t, m in zip(texts, mask, strict=True) if m], labels[mask])
            self.experts[name] = expert
        self.arrays = {
            f"{n}{k}": v
            for n, p in [("router", self.router), *self.experts.items()]
            for k, v in p.arrays.items()
        }

    def logits(self, texts: list[str]) -> Any:
        score = self.router.logits(texts)  # two classes: the score of "ex" against "cx"
        route = log_softmax(np.column_stack([np.zeros_like(score), score]), axis=1)
        scores = np.full((len(texts), len(self.classes)), -1e9)
        for column, name in enumerate(("cx", "ex")):
            expert = self.experts[name]
            part = log_softmax(expert.logits(texts), axis=1) + route[:, [column]]
            for index, label in enumerate(expert.model.classes_):
                scores[:, int(np.searchsorted(self.classes, label))] = part[:, index]
        return scores


CANDIDATES: list[type[Candidate]] = [
    TfidfLR,
    TfidfWordLlamaLR,
    TfidfWordLlamaLR50,
    TfidfWordLlamaSVM,
    WordLlamaLR,
    Ensemble,
    TwoStage,
]


def _temperature(logits: Any, truth: np.ndarray) -> float:
    grid = np.linspace(0.05, 3.0, 296)
    losses = [-log_softmax(logits / t, axis=1)[np.arange(len(truth)), truth].mean() for t in grid]
    return float(grid[int(np.argmin(losses))])


@dataclass
class Row:
    name: str
    description: str
    cv_accuracy: float
    cv_macro_f1: float
    test_accuracy: float
    test_macro_f1: float
    test_ece: float
    test_wrong_at_08: int
    temperature: float
    ms_per_message: float
    size_mb: float
    fit_seconds: float


def evaluate(
    kind: type[Candidate],
    embedder: _WordEmbedder,
    train: tuple[list[str], np.ndarray],
    test: tuple[list[str], list[str], np.ndarray],
    folds: int,
) -> Row:
    texts, labels = train
    classes = np.array(sorted(set(labels)))
    out_of_fold = np.zeros((len(texts), len(classes)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=SEED)
    for fit_index, score_index in splitter.split(np.zeros(len(labels)), labels):
        candidate = kind(embedder)
        candidate.fit([texts[i] for i in fit_index], labels[fit_index])
        out_of_fold[score_index] = candidate.logits([texts[i] for i in score_index])
    truth = np.searchsorted(classes, labels)
    temperature = _temperature(out_of_fold, truth)
    cv_predicted = classes[out_of_fold.argmax(axis=1)]

    candidate = kind(embedder)
    started = time.process_time()
    candidate.fit(texts, labels)
    fit_seconds = time.process_time() - started
    raw_texts, test_texts, test_labels = test
    probabilities = softmax(candidate.logits(test_texts) / temperature, axis=1)
    predicted = classes[probabilities.argmax(axis=1)]
    confidence = probabilities.max(axis=1)
    correct = predicted == test_labels

    timings = []
    with threadpool_limits(limits=1):
        for text in raw_texts:
            # CPU time of this thread: other work on the machine does not inflate it.
            started = time.thread_time()
            softmax(candidate.logits([normalize_for_intent(text)]) / temperature, axis=1)
            timings.append(time.thread_time() - started)
    return Row(
        name=kind.name,
        description=kind.description,
        cv_accuracy=float(accuracy_score(labels, cv_predicted)),
        cv_macro_f1=float(f1_score(labels, cv_predicted, average="macro")),
        test_accuracy=float(correct.mean()),
        test_macro_f1=float(f1_score(test_labels, predicted, average="macro")),
        test_ece=expected_calibration_error(confidence.tolist(), correct.tolist()),
        test_wrong_at_08=int((~correct & (confidence >= 0.8)).sum()),
        temperature=temperature,
        ms_per_message=statistics.median(timings) * 1000,
        size_mb=candidate.size_bytes() / 1e6,
        fit_seconds=fit_seconds,
    )


_STARTUP_SCRIPT = """
import json, sys, time
from pathlib import Path
started, cpu = time.perf_counter(), time.process_time()
from activities.intelligence.embedded import EmbeddedModels
imported, imported_cpu = time.perf_counter(), time.process_time()
models = EmbeddedModels.load(cache_dir=Path(sys.argv[1]))
print(json.dumps({
    "from_cache": models.from_cache,
    "load_seconds": models.training_seconds,
    "load_cpu_seconds": models.training_cpu_seconds,
    "import_seconds": imported - started,
    "total_seconds": time.perf_counter() - started,
    "total_cpu_seconds": time.process_time() - cpu,
}))
"""


def startup(runs: int = STARTUP_RUNS) -> dict[str, list[dict[str, Any]]]:
    """`EmbeddedModels.load()` in fresh interpreters, cold (empty cache) and warm."""
    results: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    root = Path(__file__).resolve().parents[1]
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="podium-intent-cache-") as folder:
            for phase in ("cold", "warm"):
                done = subprocess.run(
                    [sys.executable, "-c", _STARTUP_SCRIPT, folder],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results[phase].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def _median(rows: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def markdown(rows: Sequence[Row], start: dict[str, list[dict[str, Any]]] | None, meta: str) -> str:
    lines = [
        "# Intent model candidates",
        "",
        meta,
        "",
        "| model | CV accuracy | CV macro-F1 | test accuracy | test macro-F1 | test ECE "
        "| wrong >= 0.8 (test) | ms / message | size MB | training s CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.cv_accuracy:.3f} | {r.cv_macro_f1:.3f} | {r.test_accuracy:.3f} | "
            f"{r.test_macro_f1:.3f} | {r.test_ece:.3f} | {r.test_wrong_at_08} | "
            f"{r.ms_per_message:.2f} | {r.size_mb:.1f} | {r.fit_seconds:.1f} |"
        )
    lines += ["", *(f"- **{r.name}**: {r.description}" for r in rows)]
    if start:
        lines += [
            "",
            "## Worker start-up: `EmbeddedModels.load()`",
            "",
            f"Fresh interpreter each time, median of {len(start['cold'])} runs. *Load* is the "
            "intent classifier alone (train and store, or read the artefact), *total* includes "
            "importing scikit-learn, WordLlama and VADER and compiling the reply templates.",
            "",
            "| start | load s (wall) | load s (CPU) | total s (wall) | total s (CPU) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for phase in ("cold", "warm"):
            runs = start[phase]
            figures = [
                f"{_median(runs, key):.2f}"
                for key in (
                    "load_seconds",
                    "load_cpu_seconds",
                    "total_seconds",
                    "total_cpu_seconds",
                )
            ]
            how = "artefact loaded" if phase == "warm" else "trained and stored"
            lines.append(f"| {phase} ({how}) | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


FALLBACK_TABLES: dict[str, tuple[str, ...]] = {
    "embedded-only": ("embedded",),
    "embedded-then-small": ("embedded", "small"),
    "embedded-then-premium": ("embedded", "premium"),
    "embedded-then-premium, few-shot": ("embedded", "premium"),
    "small-only": ("small",),
    "premium-only": ("premium",),
    "premium-only, few-shot": ("premium",),
}
FEW_SHOT_PER_INTENT = 3


def fallback(out: Path) -> str:
    """Routing tables for low-confidence messages, on the test set (see the module doc)."""
    import asyncio
    import os

    import yaml

    from activities.intelligence.config import DEFAULT_MODELS_FILE, load_models_config
    from activities.intelligence.embedded import EmbeddedModels
    from activities.intelligence.evaluation import EvaluationReport, evaluate_cases, load_cases
    from activities.intelligence.gateway import ModelGateway
    from activities.intelligence.intent import AUTOMATION_THRESHOLD, few_shot_prompt
    from activities.intelligence.ledger import ModelLedger
    from activities.intelligence.tasks import Task
    from bench.routing import EXAMPLE_MODELS_FILE, KEY_ENV, models_document, simulated_models
    from bench.simulated_llm import SimulatedLLMServer
    from core.db import MICRO_USD_PER_USD, create_tables, make_engine

    models = EmbeddedModels.load()
    cases = load_cases(DEFAULT_DATASETS_DIR / TEST_FILE, Task.INTENT)
    example = load_models_config(EXAMPLE_MODELS_FILE)
    key = os.urandom(16).hex()
    reports: dict[str, EvaluationReport] = {}
    with (
        SimulatedLLMServer(simulated_models(models), api_key=key) as server,
        tempfile.TemporaryDirectory(prefix="podium-intent-fallback-") as folder,
    ):
        engine = make_engine(f"sqlite:///{Path(folder) / 'ledger.db'}")
        create_tables(engine)
        # The same prompts, the intent one followed by examples from the training data.
        few_shot_dir = Path(folder) / "prompts-few-shot"
        few_shot_dir.mkdir()
        prompts_dir = DEFAULT_MODELS_FILE.parent / example.prompts_dir
        for prompt in prompts_dir.glob("*.md"):
            (few_shot_dir / prompt.name).write_text(prompt.read_text(encoding="utf-8"))
        (few_shot_dir / "intent.md").write_text(
            few_shot_prompt(
                (prompts_dir / "intent.md").read_text(encoding="utf-8"),
                load_examples(DEFAULT_DATASETS_DIR / TRAIN_FILE),
                per_intent=FEW_SHOT_PER_INTENT,
            )
        )
        os.environ[KEY_ENV] = key
        try:
            for name, chain in FALLBACK_TABLES.items():
                document = models_document(server.base_url, chain, example)
                document["tasks"]["intent"]["min_confidence"] = AUTOMATION_THRESHOLD
                if name.endswith("few-shot"):
                    document["prompts_dir"] = str(few_shot_dir)
                path = Path(folder) / f"{name}.yaml"
                path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
                gateway = ModelGateway.from_file(path, models, ledger=ModelLedger(engine))

                async def run(gateway: ModelGateway = gateway, name: str = name) -> Any:
                    try:
                        return await evaluate_cases(
                            gateway, Task.INTENT, cases, run_id=f"fallback-{name}"
                        )
                    finally:
                        await gateway.aclose()

                reports[name] = asyncio.run(run())
                print(f"fallback: {name} done", file=sys.stderr, flush=True)
        finally:
            os.environ.pop(KEY_ENV, None)
            engine.dispose()
    rows = []
    data: dict[str, Any] = {"threshold": AUTOMATION_THRESHOLD, "n": len(cases), "tables": {}}
    for name, report in reports.items():
        escalated = sum(len(r.attempts) > 1 for r in report.results)
        figures = {
            "chain": list(FALLBACK_TABLES[name]),
            "accuracy": round(report.accuracy, 4),
            "macro_f1": round(report.macro_f1, 4),
            "to_a_person": round(report.needs_human / report.n, 4),
            "automated_accuracy": round(report.automated_accuracy, 4),
            "escalated_to_a_second_model": round(escalated / report.n, 4),
            "cost_per_case_usd": round(
                report.total_cost_micro_usd / report.n / MICRO_USD_PER_USD, 8
            ),
            "cost_per_1000_cases_usd": round(
                report.total_cost_micro_usd / report.n / MICRO_USD_PER_USD * 1000, 4
            ),
        }
        data["tables"][name] = figures
        rows.append(
            f"| {name} | {' -> '.join(FALLBACK_TABLES[name])} | {figures['accuracy']:.3f} | "
            f"{figures['automated_accuracy']:.3f} | {figures['to_a_person']:.1%} | "
            f"{figures['escalated_to_a_second_model']:.1%} | "
            f"${figures['cost_per_1000_cases_usd']:.4f} |"
        )
    text = "\n".join(
        [
            "# Intent: routing low-confidence messages to an LLM",
            "",
            f"{len(cases)} test messages (`datasets/intents/test.jsonl`) through `ModelGateway`, "
            f"intent `min_confidence` {AUTOMATION_THRESHOLD} (the automation threshold). "
            "**The LLMs are simulated** (`bench/routing.py`): `small` is a weaker classifier "
            "(TF-IDF on every 4th training example), `premium` is the embedded classifier "
            "itself; prices are the example models file's (gpt-4o-mini, gpt-4o). Their "
            "accuracy says nothing about a real LLM; cost per case and the escalated share do. "
            "The LLM prompt is `config/prompts/intent.md`; the few-shot tables add "
            f"{FEW_SHOT_PER_INTENT} training examples of each intent to it (`few_shot_prompt` "
            "in `activities/intelligence/intent.py`): the simulated models ignore them, so "
            "those rows show what the longer prompt costs. "
            "Written by `python -m bench.intent_models --fallback`.",
            "",
            "| table | chain | accuracy | accuracy (automated) | to a person "
            "| escalated | cost / 1,000 cases |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "intent-fallback.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "intent-fallback.md").write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--only", action="append", help="candidate names to run (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--fallback", action="store_true", help="routing tables, see above")
    args = parser.parse_args(argv)
    if args.fallback:
        print(fallback(args.out))
        return

    train_examples = load_examples(DEFAULT_DATASETS_DIR / TRAIN_FILE)
    test_examples = load_examples(DEFAULT_DATASETS_DIR / TEST_FILE)
    train = (
        [normalize_for_intent(e.text) for e in train_examples],
        np.array([e.intent.value for e in train_examples]),
    )
    test = (
        [e.text for e in test_examples],
        [normalize_for_intent(e.text) for e in test_examples],
        np.array([e.intent.value for e in test_examples]),
    )
    embedder = _WordEmbedder()
    rows = []
    for kind in CANDIDATES:
        if args.only and kind.name.split(" ")[0] not in args.only:
            continue
        row = evaluate(kind, embedder, train, test, args.folds)
        print(json.dumps(row.__dict__), file=sys.stderr, flush=True)
        rows.append(row)
    start = None if args.skip_startup else startup()
    meta = (
        f"{len(train_examples)} training examples ({args.folds}-fold cross-validation, seed "
        f"{SEED}), {len(test_examples)} test messages written separately. Written by "
        "`python -m bench.intent_models` on a 2-core machine shared with other work; latency "
        "is CPU time per message on one thread (median), size counts the stored arrays plus "
        "the WordLlama weights for candidates that embed."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "candidates": [row.__dict__ for row in rows], "startup": start}
    (args.out / "intent-models.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "intent-models.md").write_text(markdown(rows, start, meta))
    print(markdown(rows, start, meta))


if __name__ == "__main__":
    main()
