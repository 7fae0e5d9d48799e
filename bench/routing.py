"""`make bench-routing`: three routing tables for the intent task, side by side, on held-out text.

    python -m bench.routing [--limit N] [--cases FILE.jsonl] [--json] [--out FILE.json]

The tables, each a chain of the models file tried in order until an answer reaches the intent
route's `min_confidence` (0.5, from `config/models.openai.example.yaml`):

- cheap-chain    small -> premium -> embedded   (the example file's `medium` route)
- premium-only   premium
- embedded-only  embedded                       (the default `config/models.yaml`)

Every case goes through the real `ModelGateway` (HTTP client, structured outputs, validation,
circuit breakers, confidence threshold, ledger on a temporary SQLite database) via the same code
as `podium eval`, one case at a time so that latency is per case. Cost and latency per case are
the gateway's ledger figures; prices are the example file's ($0.15 / $0.60 per million input /
output tokens for small, $2.50 / $10.00 for premium).

THE LLMS ARE SIMULATED on a loopback OpenAI-compatible server (`bench/simulated_llm.py`); no
real language model is called, and their accuracy says nothing about any real LLM:

- small   (`sim-small`): a deliberately weaker classifier, TF-IDF n-grams and logistic
  regression trained on every 4th training example, without word embeddings;
- premium (`sim-premium`): the full embedded classifier (TF-IDF + WordLlama, every training
  example), the very model `embedded` is, so premium-only and embedded-only give the same
  answers and differ only in cost and latency.

Neither has seen the held-out labels. Tokens are counted from the real request and answer
(about 4 characters a token); latency is a time to first token plus a time per output token,
about 1/30 of a hosted API's, so that the run takes seconds. Read the ratios, not the absolutes.

Progress goes to stderr; the table (or `--json`) to stdout; `--out` also writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from activities.intelligence.config import DEFAULT_MODELS_FILE, ModelsConfig, load_models_config
from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TRAIN_FILE, EmbeddedModels
from activities.intelligence.evaluation import (
    EVALUABLE_TASKS,
    EvaluationReport,
    LabelledCase,
    evaluate_cases,
    load_cases,
    table,
    usd,
)
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.intent import IntentClassifier, load_examples
from activities.intelligence.ledger import ModelLedger
from activities.intelligence.tasks import Task
from activities.types import RiskLevel
from bench.simulated_llm import SimulatedLLMServer, SimulatedModel
from core.db import MICRO_USD_PER_USD, create_tables, make_engine
from core.logging import configure_logging

__all__ = ["TABLES", "RoutingBenchmark", "main", "render", "run_benchmark"]

EXAMPLE_MODELS_FILE = DEFAULT_MODELS_FILE.parent / "models.openai.example.yaml"
KEY_ENV = "PODIUM_BENCH_SIMULATED_LLM_KEY"
TABLES: dict[str, tuple[str, ...]] = {
    "cheap-chain": ("small", "premium", "embedded"),
    "premium-only": ("premium",),
    "embedded-only": ("embedded",),
}
MODEL_IDS = {"small": "sim-small", "premium": "sim-premium"}
SMALL_TRAINING_EVERY = 4  # the small model learns from every 4th training example
# Milliseconds: time to first token, then per output token (about 1/30 of a hosted API).
SMALL_LATENCY_MS = (8.0, 0.25)
PREMIUM_LATENCY_MS = (20.0, 0.6)
PROGRESS_STEPS = 5


def simulated_models(models: EmbeddedModels) -> dict[str, SimulatedModel]:
    """The two simulated LLMs: neither has seen a held-out label."""
    training = load_examples(DEFAULT_DATASETS_DIR / TRAIN_FILE)
    subset = training[::SMALL_TRAINING_EVERY]
    weak = IntentClassifier.train(subset, word_embeddings=False)
    return {
        MODEL_IDS["small"]: SimulatedModel(
            classify=weak.predict,
            description=(
                f"TF-IDF + logistic regression trained on {len(subset)} of the {len(training)} "
                "training examples (every 4th), no word embeddings"
            ),
            first_token_ms=SMALL_LATENCY_MS[0],
            per_output_token_ms=SMALL_LATENCY_MS[1],
        ),
        MODEL_IDS["premium"]: SimulatedModel(
            classify=models.classify_intent,
            description=(
                f"the full embedded classifier ({models.intent_model}), "
                "the same model as `embedded`"
            ),
            first_token_ms=PREMIUM_LATENCY_MS[0],
            per_output_token_ms=PREMIUM_LATENCY_MS[1],
        ),
    }


def models_document(base_url: str, chain: Sequence[str], example: ModelsConfig) -> dict[str, Any]:
    """A models file for one table: the example file's prices and breakers, the simulated
    server's URL and model ids, `chain` for the intent task at every risk level."""
    models: dict[str, Any] = {"embedded": {"kind": "embedded"}}
    for name, model_id in MODEL_IDS.items():
        definition = example.models[name]
        models[name] = {
            "kind": "openai_compatible",
            "base_url": base_url,
            "model": model_id,
            "api_key_env": KEY_ENV,
            "input_usd_per_1m": str(definition.input_usd_per_1m),
            "output_usd_per_1m": str(definition.output_usd_per_1m),
            "timeout_seconds": definition.timeout_seconds,
            "max_output_tokens": definition.max_output_tokens,
            "temperature": definition.temperature,
        }
    embedded_only = {level.value: ["embedded"] for level in RiskLevel}
    return {
        "version": 1,
        "breaker": example.breaker.model_dump(),
        "prompts_dir": str(DEFAULT_MODELS_FILE.parent / example.prompts_dir),
        "models": models,
        "tasks": {
            "intent": {
                "min_confidence": example.tasks.intent.min_confidence,
                "routes": {level.value: list(chain) for level in RiskLevel},
            },
            "sentiment": {"routes": embedded_only},
            "draft": {"routes": embedded_only},
        },
    }


@contextmanager
def _api_key(value: str) -> Iterator[None]:
    """Providers read their key when they are built; the variable lives no longer than that."""
    previous = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[KEY_ENV]
        else:
            os.environ[KEY_ENV] = previous


@dataclass
class RoutingBenchmark:
    cases_file: str
    reports: dict[str, EvaluationReport]
    simulation: dict[str, Any]

    @property
    def n(self) -> int:
        return next(iter(self.reports.values())).n

    def as_dict(self) -> dict[str, Any]:
        premium = self.reports.get("premium-only")
        return {
            "benchmark": "routing",
            "task": Task.INTENT.value,
            "cases_file": self.cases_file,
            "n": self.n,
            "simulated_llms": self.simulation,
            "tables": {
                name: {
                    **report.as_dict(predictions=False),
                    "cost_vs_premium_only": _ratio(report, premium),
                }
                for name, report in self.reports.items()
            },
        }


def _ratio(report: EvaluationReport, baseline: EvaluationReport | None) -> float | None:
    if baseline is None or not baseline.total_cost_micro_usd:
        return None
    return round(report.total_cost_micro_usd / baseline.total_cost_micro_usd, 4)


def spread(cases: Sequence[LabelledCase], limit: int | None) -> list[LabelledCase]:
    """`limit` cases evenly spaced through the file (it is grouped by intent)."""
    if limit is None or limit >= len(cases):
        return list(cases)
    return [cases[index * len(cases) // limit] for index in range(limit)]


def run_benchmark(
    cases: Sequence[LabelledCase],
    models: EmbeddedModels,
    *,
    cases_file: str,
    progress: bool = False,
) -> RoutingBenchmark:
    """Every table over the same cases, one after the other, against one simulated server."""
    example = load_models_config(EXAMPLE_MODELS_FILE)
    simulated = simulated_models(models)
    key = secrets.token_urlsafe(16)
    reports: dict[str, EvaluationReport] = {}
    with (
        SimulatedLLMServer(simulated, api_key=key) as server,
        tempfile.TemporaryDirectory(prefix="podium-bench-routing-") as folder,
    ):
        engine = make_engine(f"sqlite:///{Path(folder) / 'ledger.db'}")
        create_tables(engine)
        try:
            for name, chain in TABLES.items():
                path = Path(folder) / f"{name}.yaml"
                document = models_document(server.base_url, chain, example)
                path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
                with _api_key(key):
                    gateway = ModelGateway.from_file(path, models, ledger=ModelLedger(engine))
                if progress:
                    print(f"bench-routing: {name} ({' -> '.join(chain)})", file=sys.stderr)
                report = asyncio.run(_evaluate(gateway, cases, name, progress))
                report.cases_file = cases_file
                report.models_file = f"{name} (generated)"
                reports[name] = report
        finally:
            engine.dispose()
        requests = dict(server.requests)
        tokens_in, tokens_out = dict(server.tokens_in), dict(server.tokens_out)
    simulation = {
        "note": (
            "No real LLM is called: small and premium are simulated by classifiers behind an "
            "OpenAI-compatible server on 127.0.0.1. Their accuracy says nothing about real LLMs."
        ),
        "models": {
            name: {
                "model_id": model_id,
                "is": simulated[model_id].description,
                "input_usd_per_1m": float(example.models[name].input_usd_per_1m),
                "output_usd_per_1m": float(example.models[name].output_usd_per_1m),
                "latency_ms": {
                    "first_token": simulated[model_id].first_token_ms,
                    "per_output_token": simulated[model_id].per_output_token_ms,
                },
                "requests": requests.get(model_id, 0),
                "tokens_in": tokens_in.get(model_id, 0),
                "tokens_out": tokens_out.get(model_id, 0),
            }
            for name, model_id in MODEL_IDS.items()
        },
        "tokens": "about 4 characters a token over the real request and answer",
    }
    return RoutingBenchmark(cases_file, reports, simulation)


async def _evaluate(
    gateway: ModelGateway, cases: Sequence[LabelledCase], name: str, progress: bool
) -> EvaluationReport:
    def show(done: int, total: int) -> None:
        if progress and (done % max(1, total // PROGRESS_STEPS) == 0 or done == total):
            print(f"bench-routing: {name} {done}/{total}", file=sys.stderr)

    try:
        return await evaluate_cases(
            gateway, Task.INTENT, cases, run_id=f"bench-{name}", progress=show
        )
    finally:
        await gateway.aclose()


def render(bench: RoutingBenchmark) -> str:
    premium = bench.reports.get("premium-only")
    rows = []
    for name, report in bench.reports.items():
        usage = report.models()
        answered = ", ".join(
            f"{model} {usage[model].answered / report.n:.0%}"
            for model in report.chain
            if usage[model].answered
        )
        latency = report.latency()
        ratio = _ratio(report, premium)
        rows.append(
            [
                name,
                " -> ".join(report.chain),
                f"{report.accuracy:.3f}",
                f"{report.macro_f1:.3f}",
                f"{report.needs_human / report.n:.1%}",
                answered or "-",
                usd(report.total_cost_micro_usd / report.n),
                f"${report.total_cost_micro_usd / MICRO_USD_PER_USD:.4f}",
                "-" if ratio is None else f"{ratio:.0%}",
                f"{latency['p50']:.0f}",
                f"{latency['p95']:.0f}",
            ]
        )
    simulated = bench.simulation["models"]
    lines = [
        f"Routing benchmark: intent, {bench.n} cases from {bench.cases_file}",
        "LLMs SIMULATED on loopback (no real LLM is called; accuracy says nothing about one):",
    ]
    for name, model in simulated.items():
        lines.append(
            f"  {name:<8} {model['model_id']}: {model['is']}; "
            f"${model['input_usd_per_1m']:.2f} / ${model['output_usd_per_1m']:.2f} per 1M "
            f"tokens in/out; {model['latency_ms']['first_token']:g} ms + "
            f"{model['latency_ms']['per_output_token']:g} ms per output token"
        )
    lines += [
        f"Tokens: {bench.simulation['tokens']}. Latency: model time per case from the ledger.",
        "",
    ]
    lines += table(
        [
            "table",
            "chain",
            "accuracy",
            "macro-F1",
            "to person",
            "answered by",
            "cost/case",
            "total cost",
            "vs premium",
            "p50 ms",
            "p95 ms",
        ],
        rows,
        right={2, 3, 4, 6, 7, 8, 9, 10},
    )
    return "\n".join(lines)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cases", type=Path, default=None, help="labelled intent JSONL")
    parser.add_argument("--limit", type=_positive, default=None, help="evenly spaced subset")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)

    cases_path = args.cases or EVALUABLE_TASKS[Task.INTENT].default_cases
    assert cases_path is not None
    shown = os.path.relpath(cases_path) if cases_path.is_absolute() else str(cases_path)
    try:
        cases = spread(load_cases(cases_path, Task.INTENT, shown_as=shown), args.limit)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Gateway warnings (failed calls) to stderr; low-confidence fallbacks are routine here.
    configure_logging("WARNING")
    print("bench-routing: loading the embedded models", file=sys.stderr)
    bench = run_benchmark(cases, EmbeddedModels.load(), cases_file=shown, progress=True)
    text = json.dumps(bench.as_dict(), indent=2, ensure_ascii=False, allow_nan=False)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"bench-routing: wrote {args.out}", file=sys.stderr)
    print(text if args.json else render(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
