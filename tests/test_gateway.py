"""The model gateway against a real OpenAI-compatible HTTP server on 127.0.0.1.

Provider tests talk to the fake server with their own pooled client; gateway and activity tests
build the gateway from a models file written to a temporary folder, with the cost ledger on a
temporary SQLite database, exactly as the worker does.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml
from sqlalchemy.engine import Engine
from temporalio.exceptions import ApplicationError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import ActivityEnvironment

from activities.ai import IntelligenceActivities
from activities.intelligence import EmbeddedModels
from activities.intelligence.config import (
    DEFAULT_MODELS_FILE,
    ModelsConfigError,
    ProviderKind,
    load_models_config,
)
from activities.intelligence.gateway import (
    GatewayResult,
    ModelGateway,
    ModelsUnavailableError,
)
from activities.intelligence.ledger import ModelLedger, price_micro_usd
from activities.intelligence.providers import (
    InvalidOutputError,
    NonRetryableProviderError,
    OpenAICompatibleProvider,
    RetryableProviderError,
    response_format,
)
from activities.intelligence.tasks import IntentOutput, IntentRequest, Task
from activities.types import DraftReplyInput, Intent, RiskLevel, TriageInput
from core.db import ModelCall, create_tables, make_engine
from tests.fake_openai import FakeOpenAI, Scripted, chat_completion

KEY_ENV = "PODIUM_TEST_LLM_KEY"
SECRET = "sk-test-0123456789abcdef-secret"
PROMPTS_DIR = DEFAULT_MODELS_FILE.parent / "prompts"
PROMPTS = {task: f"prompt for {task}" for task in Task}
SMALL_PRICES = (Decimal("0.15"), Decimal("0.60"))
PREMIUM_PRICES = (Decimal("2.50"), Decimal("10.00"))
REFUND_TEXT = "I want my money back for order O-5004, it arrived broken"

pytestmark = pytest.mark.timeout(60)


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(max_lifetime=60) as server:
        yield server


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


def llm(base_url: str, model: str, prices: tuple[Decimal, Decimal], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "openai_compatible",
        "base_url": base_url,
        "model": model,
        "api_key_env": KEY_ENV,
        "input_usd_per_1m": str(prices[0]),
        "output_usd_per_1m": str(prices[1]),
        "timeout_seconds": 2,
        **extra,
    }


def models_file(
    folder: Path,
    base_url: str,
    *,
    intent: list[str] | None = None,
    draft: list[str] | None = None,
    min_confidence: float = 0.5,
    breaker: dict[str, Any] | None = None,
    small: dict[str, Any] | None = None,
) -> Path:
    """A models file: `small` and `premium` on the fake server, plus `embedded`; the given
    chains for every risk level."""
    intent = intent or ["small", "embedded"]
    draft = draft or ["small", "embedded"]
    document = {
        "version": 1,
        "breaker": breaker or {"failure_threshold": 5, "cooldown_seconds": 30},
        "prompts_dir": str(PROMPTS_DIR),
        "models": {
            "small": llm(base_url, "small-model", SMALL_PRICES, **(small or {})),
            "premium": llm(base_url, "premium-model", PREMIUM_PRICES),
            "embedded": {"kind": "embedded"},
        },
        "tasks": {
            "intent": {
                "min_confidence": min_confidence,
                "routes": {level.value: intent for level in RiskLevel},
            },
            "sentiment": {"routes": {level.value: ["embedded"] for level in RiskLevel}},
            "draft": {"routes": {level.value: draft for level in RiskLevel}},
        },
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


GatewayFactory = Callable[..., ModelGateway]


@pytest.fixture
def make_gateway(
    tmp_path: Path, fake: FakeOpenAI, models: EmbeddedModels, engine: Engine, api_key: str
) -> Iterator[GatewayFactory]:
    built: list[ModelGateway] = []

    def build(**options: Any) -> ModelGateway:
        path = models_file(tmp_path, fake.base_url, **options)
        gateway = ModelGateway.from_file(path, models, ledger=ModelLedger(engine))
        built.append(gateway)
        return gateway

    yield build
    for gateway in built:
        gateway.close()


def run_intent(
    gateway: ModelGateway, text: str = REFUND_TEXT, case_id: str = "case-1"
) -> GatewayResult:
    return gateway.run_blocking(
        Task.INTENT, IntentRequest(text=text), risk=RiskLevel.HIGH, case_id=case_id
    )


def ledger_rows(engine: Engine, case_id: str = "case-1") -> list[tuple[str, str, str]]:
    return [(row.provider, row.model, row.outcome) for row in ModelLedger(engine).calls(case_id)]


def intent_reply(
    intent: str = "refund_request", confidence: float = 0.92, **usage: Any
) -> Scripted:
    return chat_completion({"intent": intent, "confidence": confidence}, **usage)


# --- Provider: one upstream, one pooled client --------------------------------------------------


async def complete_intent(fake: FakeOpenAI, timeout: float = 2.0) -> Any:
    async with httpx.AsyncClient(
        base_url=fake.base_url + "/", transport=httpx.AsyncHTTPTransport(retries=0)
    ) as client:
        provider = OpenAICompatibleProvider(
            "small",
            client=client,
            model="small-model",
            api_key_env=KEY_ENV,
            prompts=PROMPTS,
            timeout_seconds=timeout,
        )
        return await provider.complete(Task.INTENT, IntentRequest(text=REFUND_TEXT))


async def test_structured_output_and_token_usage(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(intent_reply(prompt_tokens=1200, completion_tokens=30, model="small-model-0125"))

    completion = await complete_intent(fake)

    assert IntentOutput(intent=Intent.REFUND_REQUEST, confidence=0.92) == completion.output
    assert (1200, 30) == (completion.tokens_in, completion.tokens_out)
    assert "small-model-0125" == completion.model_id
    [request] = fake.requests
    assert "/v1/chat/completions" == request.path
    assert f"Bearer {api_key}" == request.headers["authorization"]
    assert "small-model" == request.body["model"]
    assert {
        "type": "json_schema",
        "json_schema": {
            "name": "IntentOutput",
            "schema": IntentOutput.model_json_schema(),
            "strict": True,
        },
    } == request.body["response_format"]
    assert request.body["response_format"] == response_format(IntentOutput)
    assert ["system", "user"] == [m["role"] for m in request.messages]
    assert {"text": REFUND_TEXT} == json.loads(request.messages[1]["content"])


async def test_429_is_retryable_with_retry_after(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(Scripted(status=429, headers={"Retry-After": "7"}, body={"error": "slow down"}))

    with pytest.raises(RetryableProviderError) as raised:
        await complete_intent(fake)

    assert 7.0 == raised.value.retry_after
    assert "HTTP 429" in str(raised.value)


async def test_500_is_retryable(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(Scripted(status=500, body={"error": {"message": "upstream exploded"}}))

    with pytest.raises(RetryableProviderError) as raised:
        await complete_intent(fake)

    assert raised.value.retry_after is None
    assert "upstream exploded" in str(raised.value)


async def test_400_is_not_retryable(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(Scripted(status=400, body={"error": {"message": "invalid schema"}}))

    with pytest.raises(NonRetryableProviderError, match="HTTP 400: invalid schema"):
        await complete_intent(fake)


async def test_malformed_body_is_retryable(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(Scripted(status=200, body="<html>bad gateway</html>"))

    with pytest.raises(RetryableProviderError, match="malformed"):
        await complete_intent(fake)


async def test_schema_violation_is_repaired_once(fake: FakeOpenAI, api_key: str) -> None:
    bad = json.dumps({"intent": "refund", "confidence": 2})
    fake.enqueue(
        chat_completion(bad, prompt_tokens=100, completion_tokens=10),
        intent_reply(prompt_tokens=150, completion_tokens=12),
    )

    completion = await complete_intent(fake)

    assert Intent.REFUND_REQUEST == completion.output.intent
    assert (250, 22) == (completion.tokens_in, completion.tokens_out)
    repair = fake.requests[1].messages
    assert ["system", "user", "assistant", "user"] == [m["role"] for m in repair]
    assert bad == repair[2]["content"]
    assert "intent" in repair[3]["content"] and "confidence" in repair[3]["content"]


async def test_schema_violation_twice_is_invalid_output(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(
        chat_completion("not json at all", prompt_tokens=100, completion_tokens=10),
        chat_completion({"intent": "refund_request"}, prompt_tokens=120, completion_tokens=8),
    )

    with pytest.raises(InvalidOutputError, match="after one repair") as raised:
        await complete_intent(fake)

    assert (220, 18) == (raised.value.tokens_in, raised.value.tokens_out)
    assert 2 == fake.request_count


async def test_timeout_is_retryable(fake: FakeOpenAI, api_key: str) -> None:
    fake.enqueue(Scripted(delay=1.0, body={}))

    with pytest.raises(RetryableProviderError, match=r"no answer within 0\.2 s"):
        await complete_intent(fake, timeout=0.2)


async def test_missing_key_is_not_retryable(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)

    with pytest.raises(NonRetryableProviderError, match=f"{KEY_ENV} is not set"):
        await complete_intent(fake)
    assert 0 == fake.request_count


# --- Gateway: chains, fallbacks, ledger ---------------------------------------------------------


def test_success_is_priced_and_recorded(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    gateway = make_gateway(intent=["small", "embedded"])
    fake.enqueue(intent_reply(prompt_tokens=1200, completion_tokens=30))

    result = run_intent(gateway)

    assert not result.needs_human
    assert ["small"] == result.attempted
    assert (1200, 30) == (result.tokens_in, result.tokens_out)
    # 1,200 x $0.15/M + 30 x $0.60/M = 180 + 18 micro-dollars
    assert 198 == result.cost_micro_usd
    assert 0.000198 == pytest.approx(result.cost_usd)
    [row] = ModelLedger(engine).calls("case-1")
    assert ("intent", "small", "small-model", "ok") == (
        row.task,
        row.provider,
        row.model,
        row.outcome,
    )
    assert (1200, 30, 198) == (row.tokens_in, row.tokens_out, row.cost_micro_usd)
    assert Decimal("0.000198") == row.cost_usd


def test_fallback_down_the_chain(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine, models: EmbeddedModels
) -> None:
    gateway = make_gateway(intent=["premium", "small", "embedded"])
    fake.enqueue(
        Scripted(status=503, body={"error": {"message": "overloaded"}}),
        chat_completion("{", prompt_tokens=100, completion_tokens=5),
        chat_completion("{", prompt_tokens=100, completion_tokens=5),
    )

    result = run_intent(gateway)

    assert not result.needs_human
    assert ["premium", "small", "embedded"] == result.attempted
    assert models.intent_model == result.model
    output = result.output_as(IntentOutput)
    assert output is not None
    assert Intent.REFUND_REQUEST == output.intent
    assert [
        ("premium", "premium-model", "failed"),
        ("small", "small-model", "invalid_output"),
        ("embedded", models.intent_model, "fallback"),
    ] == ledger_rows(engine)
    # The failed repair still costs: 200 in + 10 out at the small model's prices.
    assert price_micro_usd(200, 10, *SMALL_PRICES) == result.cost_micro_usd


def test_low_confidence_falls_through(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    gateway = make_gateway(intent=["small", "premium"], min_confidence=0.6)
    fake.enqueue(intent_reply("complaint", 0.35), intent_reply("refund_request", 0.95))

    result = run_intent(gateway)

    assert not result.needs_human
    assert IntentOutput(intent=Intent.REFUND_REQUEST, confidence=0.95) == result.output
    assert ["low_confidence", "fallback"] == [outcome for *_, outcome in ledger_rows(engine)]


def test_exhausted_chain_needs_a_person(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    gateway = make_gateway(intent=["premium", "small"], min_confidence=0.6)
    fake.enqueue(
        Scripted(status=400, body={"error": {"message": "context too long"}}),
        intent_reply("complaint", 0.4),
    )

    result = run_intent(gateway)  # does not raise: a 400 will not heal by waiting

    assert result.needs_human
    assert IntentOutput(intent=Intent.COMPLAINT, confidence=0.4) == result.output
    assert ["failed", "low_confidence"] == [outcome for *_, outcome in ledger_rows(engine)]


def test_all_retryable_failures_raise_with_the_longest_retry_after(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    gateway = make_gateway(intent=["premium", "small"])
    fake.enqueue(
        Scripted(status=503, headers={"Retry-After": "3"}),
        Scripted(status=429, headers={"Retry-After": "7"}),
    )

    with pytest.raises(ModelsUnavailableError) as raised:
        run_intent(gateway)

    assert not raised.value.non_retryable
    assert timedelta(seconds=7) == raised.value.next_retry_delay
    assert ["failed", "failed"] == [outcome for *_, outcome in ledger_rows(engine)]


def test_circuit_breaker_opens_fails_fast_and_recovers(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    cooldown = 0.4
    gateway = make_gateway(
        intent=["small"], breaker={"failure_threshold": 2, "cooldown_seconds": cooldown}
    )
    fake.enqueue(Scripted(status=500), Scripted(status=500))
    for _ in range(2):
        with pytest.raises(ModelsUnavailableError):
            run_intent(gateway)
    assert 2 == fake.request_count

    # Open: fails fast, no request, and Temporal is told to come back after the cooldown.
    with pytest.raises(ModelsUnavailableError) as raised:
        run_intent(gateway)
    assert 2 == fake.request_count
    assert raised.value.next_retry_delay is not None
    assert 0 < raised.value.next_retry_delay.total_seconds() <= cooldown

    # Half-open after the cooldown: one probe; it fails, so the circuit opens again at once.
    time.sleep(cooldown + 0.05)
    fake.enqueue(Scripted(status=502))
    with pytest.raises(ModelsUnavailableError):
        run_intent(gateway)
    with pytest.raises(ModelsUnavailableError):
        run_intent(gateway)
    assert 3 == fake.request_count

    # Half-open again; this probe succeeds and the circuit closes.
    time.sleep(cooldown + 0.05)
    fake.enqueue(intent_reply(), Scripted(status=500), intent_reply())
    assert not run_intent(gateway).needs_human
    with pytest.raises(ModelsUnavailableError):  # one failure: below the threshold
        run_intent(gateway)
    assert not run_intent(gateway).needs_human
    assert 6 == fake.request_count
    assert ["failed", "failed", "breaker_open", "failed", "breaker_open", "ok", "failed", "ok"] == [
        outcome for *_, outcome in ledger_rows(engine)
    ]


def test_open_breaker_falls_back_to_the_next_model(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine
) -> None:
    gateway = make_gateway(
        intent=["small", "embedded"], breaker={"failure_threshold": 1, "cooldown_seconds": 30}
    )
    fake.enqueue(Scripted(status=503))
    first = run_intent(gateway)
    second = run_intent(gateway)

    assert 1 == fake.request_count
    assert not first.needs_human and not second.needs_human
    assert ["failed", "fallback", "breaker_open", "fallback"] == [
        outcome for *_, outcome in ledger_rows(engine)
    ]


def test_per_case_totals(make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine) -> None:
    gateway = make_gateway(intent=["premium", "small", "embedded"])
    fake.enqueue(
        Scripted(status=500),
        intent_reply(prompt_tokens=1000, completion_tokens=50),
        intent_reply(prompt_tokens=3000, completion_tokens=100),
    )
    first = run_intent(gateway, case_id="case-A")
    second = run_intent(gateway, case_id="case-A")
    other = run_intent(gateway, text="where is my order O-5004", case_id="case-B")

    totals = ModelLedger(engine).case_totals("case-A")
    assert 3 == totals.calls  # premium failed + small, then premium
    assert first.tokens_in + second.tokens_in == totals.tokens_in == 4000
    assert first.tokens_out + second.tokens_out == totals.tokens_out == 150
    expected = price_micro_usd(1000, 50, *SMALL_PRICES) + price_micro_usd(
        3000, 100, *PREMIUM_PRICES
    )
    assert expected == first.cost_micro_usd + second.cost_micro_usd == totals.cost_micro_usd
    assert Decimal(expected) / 1_000_000 == totals.cost_usd
    assert ModelLedger(engine).case_totals("case-B").cost_micro_usd == other.cost_micro_usd


# --- Activities ---------------------------------------------------------------------------------


def test_triage_activity_routes_intent_through_the_gateway(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    activities = IntelligenceActivities(models, make_gateway(intent=["small", "embedded"]))
    fake.enqueue(intent_reply("refund_request", 0.97, prompt_tokens=500, completion_tokens=20))

    result = ActivityEnvironment().run(
        activities.triage_request,
        TriageInput(case_id="case-1", text=REFUND_TEXT, channel="chat", risk=RiskLevel.HIGH),
    )

    assert (Intent.REFUND_REQUEST, 0.97) == (result.intent, result.intent_confidence)
    assert ["O-5004"] == result.order_ids
    assert "small-model" == result.model
    assert (500, 20, False, ["small"]) == (
        result.tokens_in,
        result.tokens_out,
        result.needs_human,
        result.attempts,
    )
    assert price_micro_usd(500, 20, *SMALL_PRICES) / 1_000_000 == pytest.approx(result.cost_usd)
    assert result.sentiment_score < 0  # sentiment stays embedded: one request only
    assert 1 == fake.request_count


def test_activity_raises_retryable_error_with_next_retry_delay(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    activities = IntelligenceActivities(models, make_gateway(intent=["small"]))
    fake.enqueue(Scripted(status=429, headers={"Retry-After": "7"}))

    with pytest.raises(ApplicationError) as raised:
        ActivityEnvironment().run(
            activities.triage_request, TriageInput(case_id="c", text=REFUND_TEXT, channel="chat")
        )

    assert "ModelsUnavailable" == raised.value.type
    assert not raised.value.non_retryable
    assert timedelta(seconds=7) == raised.value.next_retry_delay


def test_activity_flags_needs_human_when_the_chain_is_exhausted(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    activities = IntelligenceActivities(models, make_gateway(intent=["small"]))
    fake.enqueue(Scripted(status=422, body={"error": {"message": "unsupported"}}))

    result = ActivityEnvironment().run(
        activities.triage_request, TriageInput(case_id="c", text=REFUND_TEXT, channel="chat")
    )

    assert result.needs_human
    assert (Intent.OTHER, 0.0, "none", ["small"]) == (
        result.intent,
        result.intent_confidence,
        result.model,
        result.attempts,
    )


def draft_input(**changes: Any) -> DraftReplyInput:
    values: dict[str, Any] = {
        "case_id": "case-1",
        "template": "refund_approved",
        "customer_name": "Ada",
        "order_id": "O-5004",
        "amount_cents": 12900,
    }
    return DraftReplyInput(**{**values, **changes})


def test_draft_reply_improves_the_template(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    activities = IntelligenceActivities(models, make_gateway(draft=["small", "embedded"]))
    improved = "Hi Ada! Great news: your refund of $129.00 for order O-5004 is on its way."
    fake.enqueue(chat_completion({"text": improved}, prompt_tokens=400, completion_tokens=40))

    result = ActivityEnvironment().run(activities.draft_reply, draft_input())

    assert improved == result.text
    assert ("small-model", ["small"], 400, 40) == (
        result.model,
        result.attempts,
        result.tokens_in,
        result.tokens_out,
    )
    sent = json.loads(fake.requests[0].messages[1]["content"])
    assert {
        "template": "refund_approved",
        "customer_name": "Ada",
        "order_id": "O-5004",
        "amount": "$129.00",
    } == {k: sent[k] for k in ("template", "customer_name", "order_id", "amount")}
    assert "$129.00" in sent["draft"]
    assert "DraftOutput" == fake.requests[0].body["response_format"]["json_schema"]["name"]


def test_draft_that_drops_a_fact_falls_back_to_the_template(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels, engine: Engine
) -> None:
    activities = IntelligenceActivities(models, make_gateway(draft=["small", "embedded"]))
    vague = chat_completion({"text": "Hi Ada, your refund is on its way!"})
    fake.enqueue(vague, vague)
    template = models.draft_reply(draft_input()).text

    result = ActivityEnvironment().run(activities.draft_reply, draft_input())

    assert template == result.text
    assert models.reply_model == result.model
    assert "$129.00" in fake.requests[1].messages[3]["content"]  # the repair names the fact
    assert ["invalid_output", "fallback"] == [outcome for *_, outcome in ledger_rows(engine)]


def test_draft_falls_back_to_the_template_when_no_model_is_available(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    activities = IntelligenceActivities(models, make_gateway(draft=["small"]))
    fake.enqueue(Scripted(status=503, headers={"Retry-After": "30"}))

    result = ActivityEnvironment().run(activities.draft_reply, draft_input())

    assert models.draft_reply(draft_input()).text == result.text
    assert (models.reply_model, ["small"], False) == (
        result.model,
        result.attempts,
        result.needs_human,
    )


def test_activity_records_temporal_metrics(
    make_gateway: GatewayFactory, fake: FakeOpenAI, models: EmbeddedModels
) -> None:
    buffer = MetricBuffer(1000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    env = ActivityEnvironment()
    env.metric_meter = runtime.metric_meter
    activities = IntelligenceActivities(models, make_gateway(intent=["premium", "small"]))
    fake.enqueue(Scripted(status=500), intent_reply(prompt_tokens=1000, completion_tokens=40))

    env.run(activities.triage_request, TriageInput(case_id="c", text=REFUND_TEXT, channel="chat"))

    updates = [
        (u.metric.name, dict(u.attributes), u.value)
        for u in buffer.retrieve_updates()
        if u.metric.name.startswith("podium_model")
    ]

    def find(name: str, **tags: str) -> list[int | float]:
        return [
            value
            for metric, attributes, value in updates
            if metric == name and tags.items() <= attributes.items()
        ]

    assert [1] == find("podium_model_calls", model="premium", task="intent", outcome="failed")
    assert [1] == find("podium_model_calls", model="small", task="intent", outcome="fallback")
    assert [1000] == find("podium_model_tokens", model="small", direction="in")
    assert [40] == find("podium_model_tokens", model="small", direction="out")
    [cost] = find("podium_model_cost_usd", model="small")
    assert price_micro_usd(1000, 40, *SMALL_PRICES) / 1_000_000 == pytest.approx(cost)


def test_default_config_is_embedded_only_and_free(models: EmbeddedModels, engine: Engine) -> None:
    config = load_models_config()
    assert {ProviderKind.EMBEDDED} == {m.kind for m in config.models.values()}
    gateway = ModelGateway.from_file(None, models, ledger=ModelLedger(engine))
    try:
        result = ActivityEnvironment().run(
            IntelligenceActivities(models, gateway).triage_request,
            TriageInput(case_id="case-1", text="where is order O-5004??", channel="chat"),
        )
    finally:
        gateway.close()
    assert (Intent.ORDER_STATUS, False, 0.0) == (result.intent, result.needs_human, result.cost_usd)
    assert [("embedded", models.intent_model, "ok")] == ledger_rows(engine)


def test_example_config_is_valid() -> None:
    config = load_models_config(DEFAULT_MODELS_FILE.parent / "models.openai.example.yaml")
    assert ["small", "premium", "embedded"] == config.tasks.intent.routes[RiskLevel.MEDIUM]
    assert all(
        m.api_key_env == "OPENAI_API_KEY"
        for m in config.models.values()
        if m.kind is ProviderKind.OPENAI_COMPATIBLE
    )


# --- Secrets ------------------------------------------------------------------------------------


def test_api_key_is_sent_but_never_logged_or_stored(
    make_gateway: GatewayFactory,
    fake: FakeOpenAI,
    models: EmbeddedModels,
    engine: Engine,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = make_gateway(intent=["premium", "small", "embedded"])
    fake.enqueue(
        # Some upstreams echo the key they rejected.
        Scripted(status=401, body={"error": {"message": f"Incorrect API key provided: {api_key}"}}),
        Scripted(status=400, body={"error": {"message": f"bad request for key {api_key}"}}),
    )
    with structlog.testing.capture_logs() as structured:
        result = ActivityEnvironment().run(
            IntelligenceActivities(models, gateway).triage_request,
            TriageInput(case_id="case-1", text=REFUND_TEXT, channel="chat"),
        )

    assert ["premium", "small", "embedded"] == result.attempts
    assert all(f"Bearer {api_key}" == r.headers["authorization"] for r in fake.requests)
    captured = capsys.readouterr()
    stored = [row.model_dump_json() for row in ModelLedger(engine).calls("case-1")]
    for text in (
        caplog.text,
        json.dumps(structured, default=str),
        captured.out,
        captured.err,
        *stored,
        result.model_dump_json(),
        repr(gateway.config),
    ):
        assert api_key not in text
    assert any("HTTP 401" in (row.error or "") for row in ModelLedger(engine).calls("case-1"))
    assert "model_call_passed_over" in [event["event"] for event in structured]


# --- Configuration ------------------------------------------------------------------------------


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(document) if not isinstance(document, str) else document)
    return path


def base_document() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_MODELS_FILE.read_text())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["tasks"]["intent"]["routes"].update(high=["embedded", "gpt-9"]),
            r"tasks\.intent\.routes\.high\[1\]: unknown model 'gpt-9'",
        ),
        (
            lambda d: d["models"].update(small={"kind": "openai_compatible", "model": "m"}),
            r"models\.small: openai_compatible models need base_url, api_key_env",
        ),
        (
            lambda d: d["models"].update(
                small=llm("http://x", "m", SMALL_PRICES, timeout_seconds=-1)
            ),
            r"models\.small\.timeout_seconds: Input should be greater than 0",
        ),
        (
            lambda d: d["models"].update(small=llm("http://x", "m", SMALL_PRICES, api_key="sk-1")),
            r"models\.small\.api_key: Extra inputs are not permitted",
        ),
        (
            lambda d: d["tasks"].pop("draft"),
            r"tasks\.draft: Field required",
        ),
        (
            lambda d: d["tasks"]["intent"]["routes"].pop("low"),
            r"tasks\.intent: .*routes needs a non-empty chain for low",
        ),
        (
            lambda d: d["breaker"].update(failure_threshold=0),
            r"breaker\.failure_threshold: Input should be greater than or equal to 1",
        ),
    ],
)
def test_config_errors_name_the_file_and_the_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], expected: str
) -> None:
    document = base_document()
    change(document)
    path = write(tmp_path, document)

    with pytest.raises(ModelsConfigError, match=expected) as raised:
        load_models_config(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_unreadable_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelsConfigError, match=r"missing\.yaml: cannot read"):
        load_models_config(tmp_path / "missing.yaml")
    with pytest.raises(ModelsConfigError, match=r"models\.yaml: not valid YAML"):
        load_models_config(write(tmp_path, "models: [unclosed"))


def test_missing_prompt_names_the_file(tmp_path: Path, models: EmbeddedModels) -> None:
    path = models_file(tmp_path, "http://127.0.0.1:9/v1")
    document = yaml.safe_load(path.read_text())
    document["prompts_dir"] = "no-such-prompts"
    path.write_text(yaml.safe_dump(document))

    with pytest.raises(ModelsConfigError, match=r"prompts_dir: cannot read .*intent\.md"):
        ModelGateway.from_file(path, models)


def test_ledger_table_is_created_with_the_others(engine: Engine) -> None:
    assert "model_calls" == ModelCall.__tablename__
    assert [] == ModelLedger(engine).calls("nobody")


def test_a_case_policy_can_route_a_task_to_other_models(
    make_gateway: GatewayFactory, fake: FakeOpenAI, engine: Engine, models: EmbeddedModels
) -> None:
    # The configured chain would ask the small model first; the case's policy says embedded.
    gateway = make_gateway(intent=["small", "embedded"])
    result = gateway.run_blocking(
        Task.INTENT,
        IntentRequest(text=REFUND_TEXT),
        risk=RiskLevel.HIGH,
        case_id="case-1",
        chain_override=["embedded"],
    )
    assert ["embedded"] == result.attempted
    assert 0 == fake.request_count
    assert [("embedded", models.intent_model, "ok")] == ledger_rows(engine)


def test_unknown_models_in_a_policy_route_fall_back_to_the_configured_chain(
    make_gateway: GatewayFactory, fake: FakeOpenAI
) -> None:
    gateway = make_gateway(intent=["embedded"])
    result = gateway.run_blocking(
        Task.INTENT,
        IntentRequest(text=REFUND_TEXT),
        risk=RiskLevel.HIGH,
        case_id="case-2",
        chain_override=["gpt-9"],
    )
    assert ["embedded"] == result.attempted
    assert 0 == fake.request_count
