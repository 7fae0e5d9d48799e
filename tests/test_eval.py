"""`podium eval` and the routing benchmark.

The command runs through `typer.testing.CliRunner` with the embedded models loaded once per
module; LLM routes go to the real OpenAI-compatible fake server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from typer.testing import CliRunner, Result

import starter.eval
from activities.intelligence import EmbeddedModels
from activities.intelligence.config import DEFAULT_MODELS_FILE
from activities.intelligence.evaluation import EVALUABLE_TASKS, load_cases, percentile
from activities.intelligence.tasks import Task
from activities.types import RiskLevel
from bench.routing import TABLES, render, run_benchmark, spread
from starter.cli import create_cli
from tests.fake_openai import FakeOpenAI, chat_completion

pytestmark = pytest.mark.timeout(120)

KEY_ENV = "PODIUM_TEST_EVAL_LLM_KEY"

# Written for this test (not taken from the intent datasets): clear requests, 17 intents.
CASES = [
    ("where is my parcel? it was supposed to come on monday", "order_status"),
    ("tracking for order 88123 has not moved in a week", "order_status"),
    ("I would like my money back for the broken kettle", "refund_request"),
    ("please refund the jacket I returned last week", "refund_request"),
    ("cancel my order before it ships please", "cancel_order"),
    ("can you change the size of the shoes in my order to 42", "change_order"),
    ("my card was charged twice for the same purchase", "payment_issue"),
    ("could you send me the invoice for my last order", "invoice"),
    ("the support I got yesterday was rude and unhelpful, very disappointed", "complaint"),
    ("love the new app, great job team!", "feedback"),
    ("how do I delete my account", "account"),
    ("I forgot my password and cannot log in", "password_reset"),
    ("let me talk to a real person", "human_agent"),
    ("do you ship to Canada and how much does it cost", "delivery_options"),
    ("I want to buy two of the blue lamps", "place_order"),
    ("I need access to the finance SharePoint site", "access_request"),
    ("my laptop screen is cracked, I need a replacement", "hardware_request"),
    ("how many vacation days do I have left this year", "hr_question"),
    ("what time do your stores open on sunday", "other"),
    ("my monitor stopped working, can I get a new one", "hardware_request"),
]


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture(autouse=True)
def shared_models(monkeypatch: pytest.MonkeyPatch, models: EmbeddedModels) -> None:
    """Train once per module, not once per command."""
    monkeypatch.setattr(starter.eval, "_embedded_models", lambda: models)
    monkeypatch.delenv("PODIUM_MODELS_FILE", raising=False)


@pytest.fixture(autouse=True)
def uncached_logging() -> Iterator[None]:
    """The command configures structlog, with cached loggers, when nothing has; in a test
    process those cached loggers would outlive the test and blind later `capture_logs`. Give
    it an uncached configuration (stderr) instead, and reset that afterwards."""
    # Whatever an earlier test left configured (possibly printing to stdout) is set aside:
    # the command's stdout must hold its report alone.
    previous = structlog.get_config()
    was_configured = structlog.is_configured()
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr), cache_logger_on_first_use=False
    )
    try:
        yield
    finally:
        structlog.reset_defaults()
        if was_configured:
            structlog.configure(**previous)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def labelled(tmp_path: Path, cases: list[tuple[str, str]] = CASES) -> Path:
    return write_jsonl(tmp_path / "cases.jsonl", [{"text": t, "intent": i} for t, i in cases])


def podium(*args: str) -> Result:
    return CliRunner().invoke(create_cli(), ["eval", *args])


# --- podium eval --------------------------------------------------------------------------------


def test_eval_json_report_on_a_labelled_file(tmp_path: Path) -> None:
    result = podium("--task", "intent", "--cases", str(labelled(tmp_path)), "--json")

    assert 0 == result.exit_code, result.stderr
    report = json.loads(result.stdout)
    predictions = report["predictions"]
    assert 20 == report["n"] == len(predictions)
    correct = sum(p["predicted"] == p["expected"] for p in predictions)
    assert round(correct / 20, 4) == report["accuracy"]
    assert report["accuracy"] >= 0.8  # clear messages: the embedded classifier knows them
    assert 0.0 <= report["macro_f1"] <= 1.0
    assert [text for text, _ in CASES] == [p["text"] for p in predictions]
    assert [intent for _, intent in CASES] == [p["expected"] for p in predictions]
    for prediction in predictions:
        assert {
            "text",
            "expected",
            "predicted",
            "confidence",
            "model",
            "cost_usd",
            "latency_ms",
            "needs_human",
        } <= set(prediction)
        assert prediction["model"].startswith("embedded:intent-")
        assert 0.0 == prediction["cost_usd"]  # the default routing table is embedded only
        assert prediction["needs_human"] == (prediction["confidence"] < 0.5)
    assert ["embedded"] == report["chain"]
    assert 0.0 == report["total_cost_usd"]
    assert {"p50", "p95"} <= set(report["latency_ms"])
    mistakes = sum(c["count"] for c in report["confusions"])
    assert 20 - correct == mistakes
    assert report["needs_human_share"] == round(sum(p["needs_human"] for p in predictions) / 20, 4)


def test_eval_prints_the_table_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "results" / "eval.json"
    result = podium("--cases", str(labelled(tmp_path)), "--out", str(out))

    assert 0 == result.exit_code, result.stderr
    for line in ("accuracy", "macro-F1", "cost per case", "latency per case", "to a person"):
        assert line in result.stdout
    assert "top confusions (true -> predicted: count)" in result.stdout
    assert "hardware_request" in result.stdout  # the per-label table
    assert 20 == json.loads(out.read_text())["n"]


def test_eval_report_writes_the_table_the_confusion_matrix_and_the_reliability_diagram(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "report"
    result = podium(
        "--cases", str(labelled(tmp_path)), "--json", "--report", "--report-dir", str(folder)
    )

    assert 0 == result.exit_code, result.stderr
    report = json.loads(result.stdout)  # --json output stays one JSON object
    assert {"accuracy", "macro_f1", "n", "predictions"} <= set(report)
    assert ["intent-confusion.svg", "intent-reliability.svg", "intent-report.md"] == sorted(
        path.name for path in folder.iterdir()
    )
    markdown = (folder / "intent-report.md").read_text()
    assert "![confusion matrix](intent-confusion.svg)" in markdown
    assert "Expected calibration error" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith("| hardware_request |")]
    assert 2 == len(rows)  # the per-intent table and the confusion matrix
    # Each confusion-matrix row sums to the cases of that intent (2 hardware requests).
    assert 2 == sum(int(cell) for cell in rows[1].split("|")[2:-1] if cell.strip() != ".")
    for name in ("intent-confusion.svg", "intent-reliability.svg"):
        svg = (folder / name).read_text()
        assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
    assert (
        "<title>hardware_request as hardware_request: "
        in (folder / "intent-confusion.svg").read_text()
    )


def test_calibration_figures() -> None:
    from activities.intelligence.evaluation import (
        choose_threshold,
        confusion_matrix,
        expected_calibration_error,
        reliability_bins,
    )

    confidences = [0.95, 0.95, 0.95, 0.95, 0.55, 0.55]
    correct = [True, True, True, True, True, False]
    # Bin 0.9-1.0: confidence 0.95, accuracy 1.0; bin 0.5-0.6: confidence 0.55, accuracy 0.5.
    assert 4 / 6 * 0.05 + 2 / 6 * 0.05 == pytest.approx(
        expected_calibration_error(confidences, correct)
    )
    assert [2, 4] == [b.count for b in reliability_bins(confidences, correct)]
    chosen = choose_threshold(confidences, correct, target=0.97)
    assert chosen is not None
    assert (0.6, 4, 1.0, 2 / 6) == (
        chosen.threshold,
        chosen.automated,
        chosen.precision,
        chosen.human_share,
    )
    assert choose_threshold([0.9, 0.9], [False, False]) is None
    assert [[1, 1], [0, 1]] == confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "refund me", "intent": "refund"}', "unknown intent 'refund'"),
        ('{"text": "refund me", "intent": ', "invalid JSON"),
        ('{"text": "refund me"}', "missing field 'intent'"),
        ('["refund me", "refund_request"]', "expected a JSON object"),
        ('{"text": "", "intent": "refund_request"}', "'text' must be a non-empty string"),
    ],
)
def test_eval_bad_line_exits_2_naming_file_and_line(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"text": "where is my order", "intent": "order_status"})
    path.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")

    result = podium("--cases", str(path), "--json")

    assert 2 == result.exit_code
    assert "" == result.stdout
    assert f"{path.resolve()}:3: " in result.stderr
    assert message in result.stderr


def test_eval_missing_file_and_bad_models_file_exit_2(tmp_path: Path) -> None:
    missing = podium("--cases", str(tmp_path / "nope.jsonl"))
    assert 2 == missing.exit_code
    assert "nope.jsonl: no such file" in missing.stderr
    assert "" == missing.stdout

    models = tmp_path / "models.yaml"
    models.write_text("version: 1\nmodels: {}\n")
    bad = podium("--cases", str(labelled(tmp_path)), "--models", str(models), "--json")
    assert 2 == bad.exit_code
    assert "models.yaml" in bad.stderr
    assert "" == bad.stdout


def test_eval_sentiment_needs_a_labelled_file(tmp_path: Path) -> None:
    result = podium("--task", "sentiment")
    assert 2 == result.exit_code
    assert "--cases" in result.stderr

    path = write_jsonl(
        tmp_path / "sentiment.jsonl",
        [
            {"text": "I love this, thank you so much!", "sentiment": "positive"},
            {"text": "This is terrible, I am furious", "sentiment": "negative"},
            {"text": "The parcel arrived on Tuesday", "sentiment": "neutral"},
        ],
    )
    scored = podium("--task", "sentiment", "--cases", str(path), "--json")
    assert 0 == scored.exit_code, scored.stderr
    report = json.loads(scored.stdout)
    assert 3 == report["n"]
    assert 1.0 == report["accuracy"]


def test_eval_min_accuracy_gate(tmp_path: Path) -> None:
    wrong = [(text, "other") for text, intent in CASES[:5] if intent != "other"]
    result = podium("--cases", str(labelled(tmp_path, wrong)), "--min-accuracy", "0.5")
    assert 1 == result.exit_code
    assert "below --min-accuracy" in result.stderr


def test_eval_through_an_llm_route_records_cost_per_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-eval")
    cases = CASES[:4]
    with FakeOpenAI(max_lifetime=60) as fake:
        models_file = tmp_path / "models.yaml"
        chain = ["small", "embedded"]
        models_file.write_text(
            yaml.safe_dump(
                {
                    "version": 1,
                    "prompts_dir": str(DEFAULT_MODELS_FILE.parent / "prompts"),
                    "models": {
                        "small": {
                            "kind": "openai_compatible",
                            "base_url": fake.base_url,
                            "model": "small-model",
                            "api_key_env": KEY_ENV,
                            "input_usd_per_1m": "0.15",
                            "output_usd_per_1m": "0.60",
                            "timeout_seconds": 5,
                        },
                        "embedded": {"kind": "embedded"},
                    },
                    "tasks": {
                        "intent": {
                            "min_confidence": 0.5,
                            "routes": {level.value: chain for level in RiskLevel},
                        },
                        "sentiment": {"routes": {r.value: ["embedded"] for r in RiskLevel}},
                        "draft": {"routes": {r.value: ["embedded"] for r in RiskLevel}},
                    },
                }
            )
        )

        def answer(intent: str, confidence: float) -> Any:
            content = {"intent": intent, "confidence": confidence}
            return chat_completion(content, prompt_tokens=1000, completion_tokens=20)

        fake.enqueue(
            answer(cases[0][1], 0.9),
            answer("complaint", 0.8),  # wrong
            answer(cases[2][1], 0.3),  # too unsure
            answer(cases[3][1], 0.95),
        )

        result = podium(
            "--cases", str(labelled(tmp_path, cases)), "--models", str(models_file), "--json"
        )
        assert 4 == fake.request_count

    assert 0 == result.exit_code, result.stderr
    report = json.loads(result.stdout)
    predictions = report["predictions"]
    per_call = (1000 * 0.15 + 20 * 0.60) / 1_000_000  # 162 micro-dollars
    for prediction in predictions:
        assert prediction["cost_usd"] > 0
        assert per_call == pytest.approx(prediction["cost_usd"])
    assert ["small-model", "small-model"] == [predictions[i]["model"] for i in (0, 1)]
    assert "complaint" == predictions[1]["predicted"]
    assert ["small", "embedded"] == predictions[2]["attempted"]  # fell through to embedded
    assert "embedded" == predictions[2]["answered_by"]
    assert 4 * per_call == pytest.approx(report["total_cost_usd"])
    assert per_call == pytest.approx(report["cost_per_case_usd"])
    assert 0.75 == report["accuracy"]
    assert {"calls": 4, "answered": 3} == {
        k: report["models"]["small"][k] for k in ("calls", "answered")
    }


def test_risk_choices_match_the_gateway() -> None:
    assert [level.value for level in RiskLevel] == [risk.value for risk in starter.eval.Risk]


def test_percentile_interpolates() -> None:
    assert 2.0 == percentile([1, 2, 3], 50)
    assert 2.9 == pytest.approx(percentile([1, 2, 3], 95))


# --- Routing benchmark --------------------------------------------------------------------------


def test_routing_bench_smoke(models: EmbeddedModels) -> None:
    heldout = EVALUABLE_TASKS[Task.INTENT].default_cases
    assert heldout is not None
    cases = spread(load_cases(heldout, Task.INTENT), 12)

    bench = run_benchmark(cases, models, cases_file="heldout")

    assert list(TABLES) == list(bench.reports)
    costs = {name: report.total_cost_micro_usd for name, report in bench.reports.items()}
    assert costs["premium-only"] > costs["cheap-chain"] > costs["embedded-only"] == 0
    text = render(bench)
    for name in TABLES:
        assert name in text
    assert "SIMULATED" in text
    data = bench.as_dict()
    assert 12 == data["n"]
    for table in data["tables"].values():
        assert {"accuracy", "macro_f1", "cost_per_case_usd", "total_cost_usd"} <= set(table)
        assert {"p50", "p95"} <= set(table["latency_ms"])
    simulated = data["simulated_llms"]["models"]
    assert simulated["small"]["requests"] == 12
    assert (
        simulated["premium"]["requests"]
        == 12 + bench.reports["cheap-chain"].models()["premium"].calls
    )
