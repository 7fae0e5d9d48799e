"""Evaluate a routing table on labelled messages: every case goes through `ModelGateway`.

    cases = load_cases(Path("datasets/intents/test.jsonl"), Task.INTENT)
    report = await evaluate_cases(gateway, Task.INTENT, cases, risk=RiskLevel.MEDIUM)
    print(render_report(report))

A case is one line of a JSONL file, `{"text": ..., "intent": ...}` (or `"sentiment"` for the
sentiment task). Each one runs through the gateway exactly as a worker would run it, so the
chain, the fallbacks, the confidence threshold and the prices are the production ones: cost and
latency per case are the figures the gateway writes to the `model_calls` ledger (the sum over
the attempts of the case; latency is model time, without queueing). A case the chain hands to a
person (`needs_human`) is scored on the best answer the chain saw, and counted in
`needs_human_share`.

`podium eval` (`starter/eval.py`) and the routing benchmark (`bench/routing.py`) are the two
callers.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sklearn.metrics import precision_recall_fscore_support

from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TEST_FILE
from activities.intelligence.gateway import (
    ACCEPTED,
    Attempt,
    CallOutcome,
    GatewayResult,
    ModelGateway,
    ModelsUnavailableError,
)
from activities.intelligence.tasks import (
    IntentOutput,
    IntentRequest,
    SentimentOutput,
    SentimentRequest,
    Task,
    TaskOutput,
    TaskRequest,
)
from activities.types import Intent, RiskLevel, Sentiment
from core.db import MICRO_USD_PER_USD

__all__ = [
    "EVALUABLE_TASKS",
    "NO_ANSWER",
    "CaseResult",
    "CasesFileError",
    "EvaluationReport",
    "LabelledCase",
    "TaskSpec",
    "evaluate_cases",
    "load_cases",
    "percentile",
    "render_report",
    "report_json",
]

# What a case is scored as when no model of the chain answered at all.
NO_ANSWER = "(no answer)"
TOP_CONFUSIONS = 10
_ERROR_TEXT_CHARS = 200


class CasesFileError(ValueError):
    """The labelled file cannot be used; the message names the file and, if any, the line."""


@dataclass(frozen=True)
class TaskSpec:
    """How one gateway task is evaluated: which field holds the label, which labels exist."""

    task: Task
    label_field: str
    labels: tuple[str, ...]
    default_cases: Path | None  # the committed labelled set, if there is one

    def request(self, text: str) -> TaskRequest:
        if self.task is Task.INTENT:
            return IntentRequest(text=text)
        return SentimentRequest(text=text)

    def label(self, output: TaskOutput) -> str:
        if isinstance(output, IntentOutput):
            return output.intent.value
        if isinstance(output, SentimentOutput):
            return output.sentiment.value
        raise TypeError(f"{type(output).__name__} is not an output of {self.task}")


EVALUABLE_TASKS: dict[Task, TaskSpec] = {
    Task.INTENT: TaskSpec(
        Task.INTENT,
        "intent",
        tuple(intent.value for intent in Intent),
        DEFAULT_DATASETS_DIR / TEST_FILE,
    ),
    # No labelled sentiment set is committed: `--cases` is required for this task.
    Task.SENTIMENT: TaskSpec(Task.SENTIMENT, "sentiment", tuple(s.value for s in Sentiment), None),
}


@dataclass(frozen=True)
class LabelledCase:
    line: int
    text: str
    expected: str


def load_cases(path: Path, task: Task, *, shown_as: str | None = None) -> list[LabelledCase]:
    """Read `path`: one JSON object a line with `text` and the task's label field. Blank lines
    are skipped. `CasesFileError` names the file (as `shown_as`) and the line at fault."""
    spec = EVALUABLE_TASKS[task]
    name = shown_as or str(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CasesFileError(f"{name}: no such file") from None
    except UnicodeDecodeError as err:
        raise CasesFileError(f"{name}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise CasesFileError(f"{name}: cannot read: {err.strerror}") from None
    cases: list[LabelledCase] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            row: object = json.loads(line)
        except json.JSONDecodeError as err:
            raise CasesFileError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
        if not isinstance(row, dict):
            raise CasesFileError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in ("text", spec.label_field):
            if key not in row:
                raise CasesFileError(f"{where}: missing field {key!r}")
        text, label = row["text"], row[spec.label_field]
        if not isinstance(text, str) or not text.strip():
            raise CasesFileError(f"{where}: 'text' must be a non-empty string")
        if label not in spec.labels:
            raise CasesFileError(
                f"{where}: unknown {spec.label_field} {label!r} "
                f"(known: {', '.join(sorted(spec.labels))})"
            )
        cases.append(LabelledCase(number, text, str(label)))
    if not cases:
        raise CasesFileError(f"{name}: no cases")
    return cases


@dataclass(frozen=True)
class CaseResult:
    """One labelled case after the gateway: what it answered, which model, at what cost."""

    text: str
    expected: str
    predicted: str | None  # None: no model of the chain answered
    confidence: float | None
    model: str | None  # upstream id of the model whose answer this is
    needs_human: bool
    attempts: tuple[Attempt, ...]
    error: str | None = None  # every model failed in a way that may heal (ModelsUnavailable)

    @property
    def correct(self) -> bool:
        return self.predicted == self.expected

    @property
    def answered_by(self) -> str | None:
        """The models-file name of the model whose answer was accepted, if any."""
        return next((a.model for a in self.attempts if a.outcome in ACCEPTED), None)

    @property
    def cost_micro_usd(self) -> int:
        return sum(a.cost_micro_usd for a in self.attempts)

    @property
    def latency_ms(self) -> int:
        return sum(a.latency_ms for a in self.attempts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "expected": self.expected,
            "predicted": self.predicted,
            "correct": self.correct,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "model": self.model,
            "answered_by": self.answered_by,
            "attempted": [a.model for a in self.attempts],
            "cost_usd": self.cost_micro_usd / MICRO_USD_PER_USD,
            "latency_ms": self.latency_ms,
            "needs_human": self.needs_human,
            "error": self.error,
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ModelUsage:
    """What one model of the chain did over the run."""

    calls: int = 0
    answered: int = 0  # its answer was accepted
    outcomes: Counter[str] = field(default_factory=Counter)
    cost_micro_usd: int = 0
    latency_ms: list[int] = field(default_factory=list)
    first_error: str | None = None


@dataclass
class EvaluationReport:
    task: Task
    risk: RiskLevel
    chain: list[str]
    min_confidence: float
    results: list[CaseResult]
    wall_seconds: float
    cases_file: str | None = None
    models_file: str | None = None

    # --- Figures ----------------------------------------------------------------------------

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def accuracy(self) -> float:
        return sum(r.correct for r in self.results) / self.n if self.results else math.nan

    def _scored(self) -> tuple[list[str], list[str], list[str]]:
        expected = [r.expected for r in self.results]
        predicted = [r.predicted or NO_ANSWER for r in self.results]
        # Macro averages over every label seen, expected or predicted; "no answer" only ever
        # counts against the expected label's recall.
        labels = sorted(set(expected) | (set(predicted) - {NO_ANSWER}))
        return expected, predicted, labels

    def per_label(self) -> dict[str, LabelScores]:
        expected, predicted, labels = self._scored()
        if not labels:
            return {}
        precision, recall, f1, support = precision_recall_fscore_support(
            expected, predicted, labels=labels, zero_division=0
        )
        return {
            label: LabelScores(float(p), float(r), float(f), int(s))
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        }

    @property
    def macro_f1(self) -> float:
        scores = self.per_label()
        return sum(s.f1 for s in scores.values()) / len(scores) if scores else math.nan

    def confusions(self) -> list[tuple[str, str, int]]:
        """(expected, predicted, count) of the mistakes, the most frequent first."""
        counts = Counter(
            (r.expected, r.predicted or NO_ANSWER) for r in self.results if not r.correct
        )
        return [(truth, got, count) for (truth, got), count in counts.most_common()]

    @property
    def needs_human(self) -> int:
        return sum(r.needs_human for r in self.results)

    @property
    def unavailable(self) -> int:
        return sum(r.error is not None for r in self.results)

    @property
    def automated_accuracy(self) -> float:
        """Accuracy on the cases the chain settled without a person."""
        settled = [r for r in self.results if not r.needs_human and r.error is None]
        return sum(r.correct for r in settled) / len(settled) if settled else math.nan

    @property
    def total_cost_micro_usd(self) -> int:
        return sum(r.cost_micro_usd for r in self.results)

    def latency(self) -> dict[str, float]:
        values = [float(r.latency_ms) for r in self.results]
        return {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "mean": sum(values) / len(values) if values else math.nan,
            "max": max(values) if values else math.nan,
        }

    def models(self) -> dict[str, ModelUsage]:
        usage: dict[str, ModelUsage] = {name: ModelUsage() for name in self.chain}
        for result in self.results:
            for attempt in result.attempts:
                entry = usage.setdefault(attempt.model, ModelUsage())
                entry.calls += 1
                entry.outcomes[attempt.outcome.value] += 1
                entry.cost_micro_usd += attempt.cost_micro_usd
                entry.latency_ms.append(attempt.latency_ms)
                entry.answered += attempt.outcome in ACCEPTED
                if attempt.error and entry.first_error is None and not _low(attempt):
                    entry.first_error = attempt.error[:_ERROR_TEXT_CHARS]
        return usage

    # --- Output -----------------------------------------------------------------------------

    def as_dict(self, *, predictions: bool = True) -> dict[str, Any]:
        """Everything as JSON-ready values; NaN (no cases to measure) becomes null."""
        n = self.n
        total = self.total_cost_micro_usd
        report: dict[str, Any] = {
            "task": self.task.value,
            "cases_file": self.cases_file,
            "models_file": self.models_file,
            "risk": self.risk.value,
            "chain": self.chain,
            "min_confidence": self.min_confidence,
            "n": n,
            "accuracy": _round(self.accuracy),
            "macro_f1": _round(self.macro_f1),
            "correct": sum(r.correct for r in self.results),
            "needs_human": self.needs_human,
            "needs_human_share": _round(self.needs_human / n if n else math.nan),
            "automated_accuracy": _round(self.automated_accuracy),
            "unavailable": self.unavailable,
            # A mean of micro-dollar amounts: nano-dollars are still meaningful.
            "cost_per_case_usd": round(total / n / MICRO_USD_PER_USD, 9) if n else None,
            "total_cost_usd": total / MICRO_USD_PER_USD,
            "total_cost_micro_usd": total,
            "latency_ms": {key: _round(value, 1) for key, value in self.latency().items()},
            "wall_seconds": round(self.wall_seconds, 2),
            "per_label": {
                label: {
                    "precision": _round(s.precision),
                    "recall": _round(s.recall),
                    "f1": _round(s.f1),
                    "support": s.support,
                }
                for label, s in self.per_label().items()
            },
            "confusions": [
                {"expected": truth, "predicted": got, "count": count}
                for truth, got, count in self.confusions()
            ],
            "models": {
                name: {
                    "calls": usage.calls,
                    "answered": usage.answered,
                    "answered_share": _round(usage.answered / n if n else math.nan),
                    "outcomes": dict(sorted(usage.outcomes.items())),
                    "cost_usd": usage.cost_micro_usd / MICRO_USD_PER_USD,
                    "latency_ms_p50": _round(percentile(usage.latency_ms, 50), 1),
                    "first_error": usage.first_error,
                }
                for name, usage in self.models().items()
            },
        }
        if predictions:
            report["predictions"] = [r.as_dict() for r in self.results]
        return report


def _low(attempt: Attempt) -> bool:
    return attempt.outcome is CallOutcome.LOW_CONFIDENCE


def _round(value: float, digits: int = 4) -> float | None:
    return None if math.isnan(value) else round(value, digits)


# --- Running ------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]


async def evaluate_cases(
    gateway: ModelGateway,
    task: Task,
    cases: Sequence[LabelledCase],
    *,
    risk: RiskLevel = RiskLevel.MEDIUM,
    concurrency: int = 1,
    run_id: str = "eval",
    progress: Progress | None = None,
) -> EvaluationReport:
    """Run every case through the gateway, at most `concurrency` at once, in file order.

    Ledger rows carry `workflow_id=run_id` and `case_id=<run_id>-<line>`. `progress(done,
    total)` is called after each case."""
    spec = EVALUABLE_TASKS[task]
    route = gateway.config.tasks.route(task)
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(case: LabelledCase) -> CaseResult:
        nonlocal done
        async with gate:
            try:
                result = await gateway.run(
                    task,
                    spec.request(case.text),
                    risk=risk,
                    case_id=f"{run_id}-{case.line}",
                    workflow_id=run_id,
                )
            except ModelsUnavailableError as err:
                outcome = _unavailable(case, err)
            else:
                outcome = _scored(spec, case, result)
        done += 1
        if progress is not None:
            progress(done, len(cases))
        return outcome

    started = time.perf_counter()
    results = await asyncio.gather(*(one(case) for case in cases))
    return EvaluationReport(
        task=task,
        risk=risk,
        chain=list(route.routes[risk]),
        min_confidence=route.min_confidence,
        results=list(results),
        wall_seconds=time.perf_counter() - started,
    )


def _scored(spec: TaskSpec, case: LabelledCase, result: GatewayResult) -> CaseResult:
    output = result.output
    return CaseResult(
        text=case.text,
        expected=case.expected,
        predicted=None if output is None else spec.label(output),
        confidence=None if output is None else output.threshold_confidence(),
        model=result.model,
        needs_human=result.needs_human,
        attempts=result.attempts,
    )


def _unavailable(case: LabelledCase, err: ModelsUnavailableError) -> CaseResult:
    return CaseResult(
        text=case.text,
        expected=case.expected,
        predicted=None,
        confidence=None,
        model=None,
        needs_human=False,
        attempts=err.attempts,
        error=str(err.message)[:_ERROR_TEXT_CHARS],
    )


def report_json(data: dict[str, Any]) -> str:
    """`EvaluationReport.as_dict()` as JSON: indented, one line per prediction, so that a
    committed report diffs case by case."""
    predictions = data.get("predictions")
    head = json.dumps(
        {key: value for key, value in data.items() if key != "predictions"},
        indent=2,
        ensure_ascii=False,
        allow_nan=False,
    )
    if predictions is None:
        return head
    rows = ",\n".join(
        "    " + json.dumps(row, ensure_ascii=False, allow_nan=False) for row in predictions
    )
    return head.removesuffix("\n}") + f',\n  "predictions": [\n{rows}\n  ]\n}}'


# --- Text report --------------------------------------------------------------------------------


def usd(micro_usd: float) -> str:
    """Dollars with micro-dollar precision: per-case model costs are fractions of a cent."""
    return f"${micro_usd / MICRO_USD_PER_USD:.6f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Plain aligned columns; the column numbers in `right` are right-aligned (figures)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _figure(value: float, digits: int = 3) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def render_report(report: EvaluationReport) -> str:
    """The human-readable report: headline figures, per-label scores, confusions, models."""
    n = report.n
    latency = report.latency()
    per_case = report.total_cost_micro_usd / n if n else math.nan
    to_person = report.needs_human / n if n else math.nan
    lines = [
        f"{report.task.value} evaluation: {n} cases"
        + (f" from {report.cases_file}" if report.cases_file else ""),
        f"routing: {report.models_file or 'models file'}, risk {report.risk.value}: "
        f"{' -> '.join(report.chain)} (min confidence {report.min_confidence:g})",
        "",
        f"accuracy          {_figure(report.accuracy)}",
        f"macro-F1          {_figure(report.macro_f1)}",
        f"n                 {n}",
        f"to a person       {_figure(to_person * 100, 1)}% ({report.needs_human} cases,"
        f" needs_human)",
        f"accuracy (auto)   {_figure(report.automated_accuracy)} on the"
        f" {n - report.needs_human - report.unavailable} cases settled without a person",
        f"cost per case     {'-' if math.isnan(per_case) else usd(per_case)}",
        f"total cost        {usd(report.total_cost_micro_usd)}",
        f"latency per case  p50 {_figure(latency['p50'], 0)} ms, p95 {_figure(latency['p95'], 0)}"
        " ms (model time, as in the ledger)",
        f"wall time         {report.wall_seconds:.1f} s",
    ]
    if report.unavailable:
        lines.append(f"unavailable       {report.unavailable} cases: every model failed")
    lines += ["", "per label"]
    scores = report.per_label()
    lines += table(
        ["label", "precision", "recall", "f1", "support"],
        [
            [label, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support)]
            for label, s in scores.items()
        ],
        right={1, 2, 3, 4},
    )
    confusions = report.confusions()
    lines += ["", "top confusions (true -> predicted: count)"]
    if not confusions:
        lines.append("  none")
    for truth, got, count in confusions[:TOP_CONFUSIONS]:
        lines.append(f"  {truth} -> {got}: {count}")
    if len(confusions) > TOP_CONFUSIONS:
        rest = sum(count for _, _, count in confusions[TOP_CONFUSIONS:])
        lines.append(f"  ... {rest} more in {len(confusions) - TOP_CONFUSIONS} other pairs")
    lines += ["", "models"]
    usage = report.models()
    lines += table(
        ["model", "calls", "answered", "low conf", "failed", "cost", "p50 ms"],
        [
            [
                name,
                str(u.calls),
                str(u.answered),
                str(u.outcomes[CallOutcome.LOW_CONFIDENCE.value]),
                str(u.calls - u.answered - u.outcomes[CallOutcome.LOW_CONFIDENCE.value]),
                usd(u.cost_micro_usd),
                _figure(percentile(u.latency_ms, 50), 0),
            ]
            for name, u in usage.items()
        ],
        right={1, 2, 3, 4, 5, 6},
    )
    for name, u in usage.items():
        if u.first_error:
            lines.append(f"  {name}: first failure: {u.first_error}")
    return "\n".join(lines)


# --- Calibration and pictures (`podium eval --report`, `python -m ...evaluate`) ----------------

CALIBRATION_BINS = 10
# The automated answers must be right at least this often (issue: "a wrong intent with high
# confidence automates the wrong process").
TARGET_AUTOMATED_PRECISION = 0.97


@dataclass(frozen=True)
class ReliabilityBin:
    """Predictions whose confidence fell in [low, high): how sure they were, how often right."""

    low: float
    high: float
    count: int
    mean_confidence: float
    accuracy: float


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> list[ReliabilityBin]:
    """Equal-width confidence bins; the last one includes 1.0. Empty bins are left out."""
    result: list[ReliabilityBin] = []
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [
            (confidence, right)
            for confidence, right in zip(confidences, correct, strict=True)
            if low <= confidence < high or (index == bins - 1 and confidence == high)
        ]
        if members:
            result.append(
                ReliabilityBin(
                    low,
                    high,
                    len(members),
                    sum(c for c, _ in members) / len(members),
                    sum(r for _, r in members) / len(members),
                )
            )
    return result


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = CALIBRATION_BINS
) -> float:
    """Mean gap between confidence and accuracy over equal-width bins, weighted by bin size."""
    total = len(confidences)
    if not total:
        return math.nan
    return sum(
        b.count / total * abs(b.accuracy - b.mean_confidence)
        for b in reliability_bins(confidences, correct, bins)
    )


@dataclass(frozen=True)
class ThresholdPoint:
    """What happens when only answers at or above `threshold` are automated."""

    threshold: float
    automated: int
    precision: float  # share of the automated answers that are right
    human_share: float  # share of all messages that go to a person
    wrong_automated: int


def threshold_curve(
    confidences: Sequence[float], correct: Sequence[bool], steps: int = 20
) -> list[ThresholdPoint]:
    """The automation threshold at 0, 1/steps, ..., (steps-1)/steps."""
    total = len(confidences)
    points = []
    for step in range(steps):
        threshold = step / steps
        kept = [r for c, r in zip(confidences, correct, strict=True) if c >= threshold]
        right = sum(kept)
        points.append(
            ThresholdPoint(
                threshold,
                len(kept),
                right / len(kept) if kept else math.nan,
                (total - len(kept)) / total if total else math.nan,
                len(kept) - right,
            )
        )
    return points


def choose_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target: float = TARGET_AUTOMATED_PRECISION,
    steps: int = 20,
) -> ThresholdPoint | None:
    """The lowest threshold on the grid from which on every higher one also keeps the automated
    answers right at least `target` of the time (so the choice is not a lucky dip); None when no
    threshold on the grid reaches it."""
    curve = threshold_curve(confidences, correct, steps)
    chosen: ThresholdPoint | None = None
    for point in reversed(curve):
        if point.automated and point.precision < target:
            break
        if point.automated:
            chosen = point
    return chosen


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f"<title>{_escape(title)}</title>",
            f'<rect width="{width}" height="{height}" fill="white"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def reliability_svg(bins: Sequence[ReliabilityBin], *, title: str, ece: float) -> str:
    """A reliability diagram: accuracy against confidence per bin (bars, with the count of
    predictions), the diagonal of perfect calibration, and the ECE in the title."""
    size, left, top = 360, 50, 40
    body = [
        f'<text x="{left}" y="18" font-size="13">{_escape(title)}</text>',
        f'<text x="{left}" y="32">expected calibration error {ece:.3f}'
        f" ({CALIBRATION_BINS} bins)</text>",
        f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="none" stroke="#888"/>',
    ]
    for tick in range(0, 11, 2):
        value = tick / 10
        x, y = left + value * size, top + size - value * size
        body.append(
            f'<text x="{x:.0f}" y="{top + size + 14}" text-anchor="middle">{value:g}</text>'
        )
        body.append(f'<text x="{left - 6}" y="{y + 4:.0f}" text-anchor="end">{value:g}</text>')
    for b in bins:
        x = left + b.low * size
        width = (b.high - b.low) * size
        height = b.accuracy * size
        gap_top = top + size - max(b.accuracy, b.mean_confidence) * size
        gap_height = abs(b.accuracy - b.mean_confidence) * size
        body += [
            f'<rect x="{x + 1:.1f}" y="{top + size - height:.1f}" width="{width - 2:.1f}" '
            f'height="{height:.1f}" fill="#4878d0"><title>confidence {b.low:.1f}-{b.high:.1f}: '
            f"{b.count} predictions, accuracy {b.accuracy:.3f}, mean confidence "
            f"{b.mean_confidence:.3f}</title></rect>",
            f'<rect x="{x + 1:.1f}" y="{gap_top:.1f}" width="{width - 2:.1f}" '
            f'height="{gap_height:.1f}" fill="#ee854a" fill-opacity="0.5"/>',
            f'<text x="{x + width / 2:.1f}" y="{top + size - height - 3:.1f}" '
            f'text-anchor="middle" font-size="9">{b.count}</text>',
        ]
    body += [
        f'<line x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}" stroke="#333" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{left + size / 2}" y="{top + size + 30}" text-anchor="middle">'
        "confidence of the chosen intent</text>",
        f'<text x="14" y="{top + size / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + size / 2})">accuracy</text>',
        f'<rect x="{left}" y="{top + size + 44}" width="10" height="10" fill="#4878d0"/>',
        f'<text x="{left + 14}" y="{top + size + 53}">accuracy (number: predictions in the bin)'
        "</text>",
        f'<rect x="{left}" y="{top + size + 60}" width="10" height="10" fill="#ee854a" '
        'fill-opacity="0.5"/>',
        f'<text x="{left + 14}" y="{top + size + 69}">gap to the mean confidence; dashed: '
        "perfect calibration</text>",
    ]
    return _svg(left + size + 60, top + size + 80, body, title)


def confusion_matrix(
    expected: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Rows: the expected label; columns: the predicted one, both in `labels` order."""
    index = {label: position for position, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, got in zip(expected, predicted, strict=True):
        if truth in index and got in index:
            matrix[index[truth]][index[got]] += 1
    return matrix


def confusion_svg(labels: Sequence[str], matrix: Sequence[Sequence[int]], *, title: str) -> str:
    """The confusion matrix as a heat map: rows expected, columns predicted, counts in cells;
    the diagonal in blue, mistakes in red."""
    cell, left, top = 26, 130, 140
    n = len(labels)
    body = [f'<text x="10" y="18" font-size="13">{_escape(title)}</text>']
    for position, label in enumerate(labels):
        y = top + position * cell + cell / 2 + 4
        x = left + position * cell + cell / 2
        body.append(f'<text x="{left - 6}" y="{y:.0f}" text-anchor="end">{_escape(label)}</text>')
        body.append(
            f'<text x="{x:.0f}" y="{top - 6}" transform="rotate(-60 {x:.0f} {top - 6})">'
            f"{_escape(label)}</text>"
        )
    for row, counts in enumerate(matrix):
        total = sum(counts) or 1
        for column, count in enumerate(counts):
            share = count / total
            colour = "72,120,208" if row == column else "214,39,40"
            x, y = left + column * cell, top + row * cell
            body.append(
                f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" '
                f'fill="rgb({colour})" fill-opacity="{0.08 + 0.92 * share if count else 0:.2f}" '
                f'stroke="#ddd"><title>{_escape(labels[row])} as {_escape(labels[column])}: '
                f"{count}</title></rect>"
            )
            if count:
                ink = "white" if share > 0.5 else "black"
                body.append(
                    f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                    f'fill="{ink}">{count}</text>'
                )
    body += [
        f'<text x="{left + n * cell / 2}" y="{top + n * cell + 20}" text-anchor="middle">'
        "predicted</text>",
        f'<text x="12" y="{top + n * cell / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + n * cell / 2})">expected</text>',
    ]
    return _svg(left + n * cell + 20, top + n * cell + 30, body, title)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def calibration_lines(confidences: Sequence[float], correct: Sequence[bool]) -> list[str]:
    """ECE, the chosen automation threshold and the threshold curve, as Markdown."""
    ece = expected_calibration_error(confidences, correct)
    chosen = choose_threshold(confidences, correct)
    lines = [f"Expected calibration error ({CALIBRATION_BINS} bins): {_figure(ece)}", ""]
    if chosen is None:
        lines.append(
            f"No threshold keeps automated answers right {TARGET_AUTOMATED_PRECISION:.0%} of the "
            "time on these cases."
        )
    else:
        lines.append(
            f"Lowest threshold with automated answers right >= {TARGET_AUTOMATED_PRECISION:.0%}"
            f" (here and at every higher threshold): {chosen.threshold:.2f}: precision "
            f"{chosen.precision:.3f}, {chosen.human_share:.1%} to a person, "
            f"{chosen.wrong_automated} wrong automated answers."
        )
    lines += ["", "| threshold | automated | precision | to a person | wrong automated |"]
    lines.append("| --- | --- | --- | --- | --- |")
    for point in threshold_curve(confidences, correct):
        if point.threshold < 0.3:  # nothing scores that low with 17 intents to choose from
            continue
        lines.append(
            f"| {point.threshold:.2f} | {point.automated} | {_figure(point.precision)} | "
            f"{point.human_share:.1%} | {point.wrong_automated} |"
        )
    return lines


def render_markdown_report(report: EvaluationReport, *, confusion_picture: str) -> str:
    """`podium eval --report`: headline figures, per-intent table, confusion matrix (table and
    the picture's file name), calibration and the threshold curve."""
    labels = list(EVALUABLE_TASKS[report.task].labels)
    expected = [r.expected for r in report.results]
    predicted = [r.predicted or NO_ANSWER for r in report.results]
    scores = report.per_label()
    lines = [
        f"# {report.task.value} evaluation: {report.n} cases"
        + (f" from `{report.cases_file}`" if report.cases_file else ""),
        "",
        f"Routing `{report.models_file}`, risk {report.risk.value}: "
        f"{' -> '.join(report.chain)} (min confidence {report.min_confidence:g}).",
        "",
        f"accuracy {_figure(report.accuracy)}, macro-F1 {_figure(report.macro_f1)}, "
        f"{report.needs_human} of {report.n} to a person, accuracy of the rest "
        f"{_figure(report.automated_accuracy)}.",
        "",
        "## Per intent",
        "",
    ]
    lines += markdown_table(
        ["intent", "cases", "accuracy (recall)", "precision", "F1", "most often mistaken for"],
        [
            [
                label,
                str(scores[label].support),
                f"{scores[label].recall:.3f}",
                f"{scores[label].precision:.3f}",
                f"{scores[label].f1:.3f}",
                ", ".join(
                    f"{got} ({count})"
                    for truth, got, count in report.confusions()[:50]
                    if truth == label
                )[:80]
                or "-",
            ]
            for label in labels
            if label in scores
        ],
    )
    matrix = confusion_matrix(expected, predicted, labels)
    short = [label[:6] for label in labels]
    lines += ["", "## Confusion matrix", "", f"![confusion matrix]({confusion_picture})", ""]
    lines += markdown_table(
        ["expected \\ predicted", *short],
        [
            [label, *[str(count) if count else "." for count in row]]
            for label, row in zip(labels, matrix, strict=True)
        ],
    )
    scored = [r for r in report.results if r.confidence is not None]
    if scored:
        lines += ["", "## Calibration", ""]
        lines += calibration_lines(
            [float(r.confidence or 0.0) for r in scored], [r.correct for r in scored]
        )
    return "\n".join(lines) + "\n"
