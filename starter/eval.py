"""`podium eval`: score a routing table on labelled messages.

    podium eval [--task intent] [--cases FILE.jsonl] [--models CONFIG.yaml] [--risk medium]
                [--concurrency 1] [--out FILE.json] [--min-accuracy 0.9] [--progress] [--json]
                [--report] [--report-dir results]

Every case runs through `ModelGateway` with the chosen models file (default `PODIUM_MODELS_FILE`,
else `config/models.yaml`) and risk level, exactly as a worker would run it, with the cost
ledger on a temporary SQLite database. The report gives accuracy, macro-F1, per-label scores,
the top confusions, cost per case and in total, latency p50/p95 per case and the share handed
to a person; `--json` prints it as one JSON object with every prediction, `--out` also writes
that object to a file. Progress goes to stderr when stderr is a terminal (or with `--progress`).
`--report` also writes `<task>-report.md` (per-label table, confusion matrix, calibration error
and the automation-threshold curve) with the pictures `<task>-confusion.svg` and
`<task>-reliability.svg` to `--report-dir` (default `results/`).

The intent task defaults to `datasets/intents/test.jsonl`, written separately from the
training examples. No labelled sentiment set is
committed: `--task sentiment` needs `--cases` with `{"text": ..., "sentiment": ...}` lines.

Exit codes: 0 done, 1 accuracy below `--min-accuracy`, 2 bad input (cases file, models file,
options); errors name the file and the line, and nothing but the error is printed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:  # the models pull in scikit-learn: import them only when `eval` runs
    from activities.intelligence.embedded import EmbeddedModels
    from activities.intelligence.evaluation import EvaluationReport

__all__ = [
    "EvalOptions",
    "EvalTask",
    "Risk",
    "add_eval_command",
    "run_eval",
    "write_report_files",
]

EXIT_BELOW_TARGET = 1
EXIT_BAD_INPUT = 2
PROGRESS_STEPS = 10


class EvalTask(StrEnum):
    """The gateway tasks that have a label to score against (`draft` has none)."""

    INTENT = "intent"
    SENTIMENT = "sentiment"


class Risk(StrEnum):
    """`activities.types.RiskLevel`, repeated so that `podium --help` need not import it."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class EvalOptions:
    task: EvalTask = EvalTask.INTENT
    cases: Path | None = None
    models: Path | None = None
    risk: Risk = Risk.MEDIUM
    concurrency: int = 1
    out: Path | None = None
    min_accuracy: float | None = None
    progress: bool | None = None  # None: when stderr is a terminal
    json_output: bool = False
    report_dir: Path | None = None  # None: no --report


class _BadInput(Exception):
    pass


def _shown(path: Path) -> str:
    """Paths inside the working directory relative to it: reports stay portable."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _embedded_models() -> EmbeddedModels:
    from activities.intelligence.embedded import EmbeddedModels

    return EmbeddedModels.load()


def _configure_logging() -> None:
    """Gateway warnings go to stderr: stdout carries only the report. A process (or test) that
    already configured structlog keeps its configuration."""
    import structlog

    from core.logging import configure_logging

    if not structlog.is_configured():
        configure_logging("WARNING")


def _progress_printer(enabled: bool) -> Callable[[int, int], None]:
    started = time.perf_counter()

    def report(done: int, total: int) -> None:
        step = max(1, total // PROGRESS_STEPS)
        if enabled and (done % step == 0 or done == total):
            elapsed = time.perf_counter() - started
            typer.echo(f"eval: {done}/{total} cases, {elapsed:.1f} s", err=True)

    return report


def run_eval(options: EvalOptions) -> EvaluationReport:
    """Load, run and return the report; `_BadInput` for unusable files or options."""
    from activities.intelligence.config import (
        DEFAULT_MODELS_FILE,
        ModelsConfigError,
        load_models_config,
        load_prompts,
    )
    from activities.intelligence.evaluation import (
        EVALUABLE_TASKS,
        CasesFileError,
        evaluate_cases,
        load_cases,
    )
    from activities.intelligence.gateway import ModelGateway
    from activities.intelligence.ledger import ModelLedger
    from activities.intelligence.tasks import Task
    from activities.types import RiskLevel
    from core.db import create_tables, make_engine

    task = Task(options.task.value)
    spec = EVALUABLE_TASKS[task]
    cases_path = options.cases or spec.default_cases
    if cases_path is None:
        raise _BadInput(
            f"no labelled {task} set is committed: pass --cases FILE.jsonl with one "
            f'{{"text": ..., "{spec.label_field}": ...}} object a line'
        )
    models_path = options.models or DEFAULT_MODELS_FILE
    try:
        cases = load_cases(cases_path, task, shown_as=_shown(cases_path))
        config = load_models_config(models_path)
        prompts = load_prompts(config, models_path)
    except (CasesFileError, ModelsConfigError) as err:
        raise _BadInput(str(err)) from None

    _configure_logging()
    models = _embedded_models()
    run_id = f"eval-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="podium-eval-") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'ledger.db'}")
        create_tables(engine)
        gateway = ModelGateway.build(config, models, prompts=prompts, ledger=ModelLedger(engine))

        async def evaluate() -> EvaluationReport:
            try:
                return await evaluate_cases(
                    gateway,
                    task,
                    cases,
                    risk=RiskLevel(options.risk.value),
                    concurrency=options.concurrency,
                    run_id=run_id,
                    progress=_progress_printer(
                        sys.stderr.isatty() if options.progress is None else options.progress
                    ),
                )
            finally:
                await gateway.aclose()

        try:
            report = asyncio.run(evaluate())
            ledger = _ledger_totals(engine, run_id)
        finally:
            engine.dispose()
    report.cases_file = _shown(cases_path)
    report.models_file = _shown(models_path)
    if ledger != (sum(len(r.attempts) for r in report.results), report.total_cost_micro_usd):
        # The gateway logs ledger write failures; the figures above stay those of the attempts.
        typer.echo(f"warning: the ledger holds {ledger[0]} rows, {ledger[1]} micro-USD", err=True)
    return report


def _ledger_totals(engine: Any, run_id: str) -> tuple[int, int]:
    from sqlalchemy import func
    from sqlmodel import Session, col, select

    from core.db import ModelCall

    with Session(engine) as session:
        rows, cost = session.exec(
            select(
                func.count(col(ModelCall.id)),
                func.coalesce(func.sum(ModelCall.cost_micro_usd), 0),
            ).where(ModelCall.workflow_id == run_id)
        ).one()
    return int(rows), int(cost)


def write_report_files(report: EvaluationReport, folder: Path) -> list[Path]:
    """`--report`: `<task>-report.md`, `<task>-confusion.svg` and, when the answers carry a
    confidence, `<task>-reliability.svg` in `folder`. Returns the paths written."""
    from activities.intelligence.evaluation import (
        EVALUABLE_TASKS,
        NO_ANSWER,
        confusion_matrix,
        confusion_svg,
        expected_calibration_error,
        reliability_bins,
        reliability_svg,
        render_markdown_report,
    )

    task = report.task.value
    folder.mkdir(parents=True, exist_ok=True)
    labels = list(EVALUABLE_TASKS[report.task].labels)
    source = f" on {report.cases_file}" if report.cases_file else ""
    matrix = confusion_matrix(
        [r.expected for r in report.results],
        [r.predicted or NO_ANSWER for r in report.results],
        labels,
    )
    pictures = {
        folder / f"{task}-confusion.svg": confusion_svg(
            labels, matrix, title=f"{task}: confusion matrix, {report.n} cases{source}"
        )
    }
    scored = [r for r in report.results if r.confidence is not None]
    if scored:
        confidences = [float(r.confidence or 0.0) for r in scored]
        correct = [r.correct for r in scored]
        pictures[folder / f"{task}-reliability.svg"] = reliability_svg(
            reliability_bins(confidences, correct),
            title=f"{task}: reliability, {len(scored)} cases{source}",
            ece=expected_calibration_error(confidences, correct),
        )
    markdown = folder / f"{task}-report.md"
    pictures[markdown] = render_markdown_report(report, confusion_picture=f"{task}-confusion.svg")
    for path, text in pictures.items():
        path.write_text(text, encoding="utf-8")
    return list(pictures)


def add_eval_command(cli: typer.Typer) -> None:
    """Register `eval` on the `podium` command."""

    @cli.command("eval")
    def eval_command(
        task: Annotated[EvalTask, typer.Option(help="What to score.")] = EvalTask.INTENT,
        cases: Annotated[
            Path | None,
            typer.Option(
                help="Labelled JSONL: text plus the task's label "
                "(default for intent: datasets/intents/test.jsonl).",
                dir_okay=False,
            ),
        ] = None,
        models: Annotated[
            Path | None,
            typer.Option(
                envvar="PODIUM_MODELS_FILE",
                help="The routing table (default: config/models.yaml).",
                dir_okay=False,
            ),
        ] = None,
        risk: Annotated[Risk, typer.Option(help="Which chain of the task to run.")] = Risk.MEDIUM,
        concurrency: Annotated[
            int, typer.Option(min=1, max=64, help="Cases in flight (for remote models).")
        ] = 1,
        out: Annotated[
            Path | None, typer.Option(help="Also write the JSON report to this file.")
        ] = None,
        min_accuracy: Annotated[
            float | None, typer.Option(min=0.0, max=1.0, help="Exit 1 below this accuracy.")
        ] = None,
        progress: Annotated[
            bool | None,
            typer.Option(
                "--progress/--no-progress", help="Progress on stderr (default: on a terminal)."
            ),
        ] = None,
        json_output: Annotated[
            bool, typer.Option("--json", help="Print the report as one JSON object.")
        ] = False,
        write_report: Annotated[
            bool,
            typer.Option(
                "--report",
                help="Also write a Markdown report with the per-label table, the confusion "
                "matrix and the reliability diagram (SVG pictures) to --report-dir.",
            ),
        ] = False,
        report_dir: Annotated[
            Path, typer.Option(help="Folder for --report.", file_okay=False)
        ] = Path("results"),
    ) -> None:
        """Score a routing table on labelled messages: accuracy, macro-F1, cost, latency."""
        options = EvalOptions(
            task,
            cases,
            models,
            risk,
            concurrency,
            out,
            min_accuracy,
            progress,
            json_output,
            report_dir if write_report else None,
        )
        try:
            report = run_eval(options)
        except _BadInput as err:
            _fail(str(err), EXIT_BAD_INPUT)
        from activities.intelligence.evaluation import render_report, report_json

        data = report.as_dict()
        text = report_json(data)
        if json_output:
            typer.echo(text)
        else:
            typer.echo(render_report(report))
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text + "\n", encoding="utf-8")
            typer.echo(f"wrote {_shown(out)}", err=True)
        if options.report_dir is not None:
            for path in write_report_files(report, options.report_dir):
                typer.echo(f"wrote {_shown(path)}", err=True)
        if min_accuracy is not None and report.accuracy < min_accuracy:
            _fail(
                f"accuracy {report.accuracy:.3f} is below --min-accuracy {min_accuracy:g}",
                EXIT_BELOW_TARGET,
            )
