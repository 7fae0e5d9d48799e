"""The model gateway: route a task to an ordered chain of models, fall back, price every call.

`ModelGateway.run(task, request, risk=..., case_id=..., workflow_id=...)` looks up the chain for
(task, risk) in the models file and tries each model once, in order. A model is passed over
when its circuit is open, when it fails (HTTP error, timeout), when its output is invalid after
one repair, or when its confidence is below the task's threshold. The first acceptable answer
wins. When the chain runs out:

- if every attempt failed in a way that may heal by itself (429, 5xx, timeouts, open
  circuits), `ModelsUnavailableError` is raised: a retryable `ApplicationError` whose
  `next_retry_delay` is the longest `Retry-After` seen, so Temporal retries the activity then;
- otherwise the result comes back with `needs_human=True` (and the best low-confidence answer,
  if there was one) and the workflow routes the case to a person. It never raises for that.

Nothing here retries a call: within one activity attempt each model is tried at most once, and
retrying is Temporal's job.

Every attempt becomes one `model_calls` row (outcome ok / fallback / failed / low_confidence /
breaker_open / invalid_output) written in one transaction, in a thread, when the run ends.

Each remote model has its own circuit breaker (purgatory) for the life of the gateway, one
gateway per worker process: it opens after `failure_threshold` consecutive retryable failures,
fails fast without a request for `cooldown_seconds`, then lets a probe through (half-open) and
closes again when the probe succeeds. 4xx answers and invalid output do not count against a
model's health: the upstream answered.

The gateway is asyncio code and its pooled HTTP clients belong to one event loop. Synchronous
activities call `run_blocking`, which runs the coroutine on the gateway's own event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import structlog
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from sqlalchemy.exc import SQLAlchemyError
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError

from activities.intelligence.config import (
    ModelsConfig,
    ProviderKind,
    load_models_config,
    load_prompts,
)
from activities.intelligence.ledger import ModelLedger, price_micro_usd
from activities.intelligence.providers import (
    ChatReply,
    Completion,
    EmbeddedProvider,
    InvalidOutputError,
    NonRetryableProviderError,
    OpenAICompatibleProvider,
    Provider,
    ProviderError,
    RetryableProviderError,
)

if TYPE_CHECKING:
    from activities.intelligence.embedded import EmbeddedModels
from activities.intelligence.tasks import Task, TaskOutput, TaskRequest
from activities.types import RiskLevel
from core import metrics
from core.db import MICRO_USD_PER_USD, ModelCall

__all__ = [
    "AGENT_TASK",
    "Attempt",
    "CallOutcome",
    "ChatResult",
    "GatewayResult",
    "ModelGateway",
    "ModelsUnavailableError",
    "observe_attempts",
    "record_metrics",
]

log = structlog.stdlib.get_logger(__name__)

OutputT = TypeVar("OutputT", bound=TaskOutput)
T = TypeVar("T")

_MAX_ERROR_CHARS = 500
# The ledger's task name for tool-calling agent turns (`ModelGateway.chat`).
AGENT_TASK = "agent"
_CLOSE_TIMEOUT_SECONDS = 10.0


class CallOutcome(StrEnum):
    OK = "ok"  # the first model of the chain answered
    FALLBACK = "fallback"  # a later model answered, after the ones before it did not
    FAILED = "failed"  # HTTP error, timeout, connection error, missing key, refusal
    LOW_CONFIDENCE = "low_confidence"  # answered below the task's threshold
    BREAKER_OPEN = "breaker_open"  # not called: its circuit is open
    INVALID_OUTPUT = "invalid_output"  # the reply failed the schema, even after one repair


ACCEPTED = frozenset({CallOutcome.OK, CallOutcome.FALLBACK})


@dataclass(frozen=True)
class Attempt:
    """One model tried by one gateway run."""

    model: str  # name in the models file
    model_id: str  # upstream model id (or the embedded model's name)
    outcome: CallOutcome
    tokens_in: int = 0
    tokens_out: int = 0
    cost_micro_usd: int = 0
    latency_ms: int = 0
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class GatewayResult:
    task: Task
    output: TaskOutput | None  # None when no model answered at all
    model: str | None  # upstream id of the model whose answer this is
    needs_human: bool
    attempts: tuple[Attempt, ...]

    @property
    def tokens_in(self) -> int:
        return sum(a.tokens_in for a in self.attempts)

    @property
    def tokens_out(self) -> int:
        return sum(a.tokens_out for a in self.attempts)

    @property
    def cost_micro_usd(self) -> int:
        return sum(a.cost_micro_usd for a in self.attempts)

    @property
    def cost_usd(self) -> float:
        """Spend of every attempt, USD (float for the payload; the ledger keeps it exact)."""
        return self.cost_micro_usd / MICRO_USD_PER_USD

    @property
    def attempted(self) -> list[str]:
        return [a.model for a in self.attempts]

    def output_as(self, kind: type[OutputT]) -> OutputT | None:
        if self.output is None:
            return None
        if not isinstance(self.output, kind):
            raise TypeError(f"{self.task} gave {type(self.output).__name__}, not {kind.__name__}")
        return self.output


@dataclass(frozen=True)
class ChatResult:
    """One tool-calling turn through the gateway, priced."""

    reply: ChatReply
    model: str  # name in the models file
    cost_micro_usd: int


class ModelsUnavailableError(ApplicationError):
    """Every model of the chain failed in a way that may heal: Temporal should retry later."""

    def __init__(self, task: Task, attempts: Sequence[Attempt]) -> None:
        hints = [a.retry_after for a in attempts if a.retry_after is not None]
        delay = timedelta(seconds=max(hints)) if hints else None
        tried = ", ".join(f"{a.model} ({a.outcome})" for a in attempts)
        super().__init__(
            f"no model available for {task}: {tried}",
            [{"model": a.model, "outcome": a.outcome.value, "error": a.error} for a in attempts],
            type="ModelsUnavailable",
            non_retryable=False,
            next_retry_delay=delay,
        )
        self.attempts = tuple(attempts)


def record_metrics(meter: MetricMeter, task: Task | str, attempts: Sequence[Attempt]) -> None:
    """`podium_model_calls`, `podium_model_tokens` and `podium_model_cost_usd`, per attempt,
    tagged by model (its name in the models file), task and outcome."""
    calls = meter.create_counter("podium_model_calls", "Model calls by the gateway")
    tokens = meter.create_counter("podium_model_tokens", "Model tokens", "tokens")
    cost = meter.create_histogram_float("podium_model_cost_usd", "Model spend per call", "USD")
    for attempt in attempts:
        tags = {"model": attempt.model, "task": str(task), "outcome": attempt.outcome.value}
        calls.add(1, tags)
        if attempt.tokens_in:
            tokens.add(attempt.tokens_in, {**tags, "direction": "in"})
        if attempt.tokens_out:
            tokens.add(attempt.tokens_out, {**tags, "direction": "out"})
        cost.record(attempt.cost_micro_usd / MICRO_USD_PER_USD, tags)


# `podium_provider_breaker_open` per purgatory state.
_BREAKER_LEVEL = {"closed": 0.0, "half-opened": 0.5, "opened": 1.0}
_ERROR_OUTCOMES = frozenset(
    {CallOutcome.FAILED, CallOutcome.INVALID_OUTPUT, CallOutcome.BREAKER_OPEN}
)


def observe_attempts(task: Task | str, attempts: Sequence[Attempt]) -> None:
    """The worker's Prometheus series (`core.metrics`) for the gateway's attempts, per provider
    (model name in the models file): calls, errors, latency, spend."""
    for attempt in attempts:
        provider = metrics.label(attempt.model)
        outcome = attempt.outcome.value
        metrics.PROVIDER_CALLS.labels(
            provider=provider, task=metrics.label(str(task)), outcome=outcome
        ).inc()
        if attempt.outcome in _ERROR_OUTCOMES:
            metrics.PROVIDER_ERRORS.labels(provider=provider, outcome=outcome).inc()
        if attempt.outcome is not CallOutcome.BREAKER_OPEN:
            metrics.PROVIDER_LATENCY.labels(provider=provider).observe(attempt.latency_ms / 1000)
        metrics.PROVIDER_COST_USD.labels(provider=provider).inc(
            attempt.cost_micro_usd / MICRO_USD_PER_USD
        )


class _LoopThread:
    """An event loop on a daemon thread, started on first use, for callers without a loop."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(
            _CLOSE_TIMEOUT_SECONDS
        )
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CLOSE_TIMEOUT_SECONDS)
        loop.close()


def _http_client(base_url: str) -> httpx.AsyncClient:
    # Temporal owns retries: no transport retries, no redirects to follow silently.
    return httpx.AsyncClient(
        base_url=base_url,
        transport=httpx.AsyncHTTPTransport(retries=0),
        headers={"User-Agent": "podium-model-gateway"},
        follow_redirects=False,
    )


class ModelGateway:
    """Routes tasks through the configured model chains. One per worker process."""

    def __init__(
        self,
        config: ModelsConfig,
        providers: Mapping[str, Provider],
        *,
        ledger: ModelLedger | None = None,
        clients: Sequence[httpx.AsyncClient] = (),
    ) -> None:
        missing = sorted(set(config.models) - set(providers))
        if missing:
            raise ValueError(f"no provider for models: {', '.join(missing)}")
        self._config = config
        self._providers = dict(providers)
        self._ledger = ledger
        self._clients = list(clients)
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=config.breaker.failure_threshold,
            default_ttl=config.breaker.cooldown_seconds,
            # The upstream answered: a bad request or a bad answer says nothing of its health.
            exclude=[NonRetryableProviderError, InvalidOutputError, asyncio.CancelledError],
        )
        self._breakers.add_listener(self._on_breaker_event)
        self._loop = _LoopThread("model-gateway")

    @classmethod
    def build(
        cls,
        config: ModelsConfig,
        models: EmbeddedModels,
        *,
        prompts: Mapping[Task, str] | None = None,
        ledger: ModelLedger | None = None,
    ) -> ModelGateway:
        """Providers for every configured model; one pooled HTTP client per upstream."""
        clients: dict[str, httpx.AsyncClient] = {}
        providers: dict[str, Provider] = {}
        for name, definition in config.models.items():
            if definition.kind is ProviderKind.EMBEDDED:
                providers[name] = EmbeddedProvider(name, models)
                continue
            assert definition.base_url and definition.model and definition.api_key_env
            if prompts is None:
                raise ValueError(f"model {name!r} is an LLM: prompts are required")
            base_url = definition.base_url.rstrip("/") + "/"
            if base_url not in clients:
                clients[base_url] = _http_client(base_url)
            provider = OpenAICompatibleProvider(
                name,
                client=clients[base_url],
                model=definition.model,
                api_key_env=definition.api_key_env,
                prompts=dict(prompts),
                timeout_seconds=definition.timeout_seconds,
                max_output_tokens=definition.max_output_tokens,
                temperature=definition.temperature,
            )
            providers[name] = provider
            if not provider.has_api_key:
                log.warning("model_api_key_missing", model=name, env=definition.api_key_env)
        return cls(config, providers, ledger=ledger, clients=list(clients.values()))

    @classmethod
    def from_file(
        cls, path: Path | None, models: EmbeddedModels, *, ledger: ModelLedger | None = None
    ) -> ModelGateway:
        """Load `path` (default: the repository's `config/models.yaml`) and build."""
        config = load_models_config(path)
        return cls.build(config, models, prompts=load_prompts(config, path), ledger=ledger)

    @property
    def config(self) -> ModelsConfig:
        return self._config

    # --- Running ----------------------------------------------------------------------------

    async def run(
        self,
        task: Task,
        request: TaskRequest,
        *,
        risk: RiskLevel = RiskLevel.MEDIUM,
        case_id: str | None = None,
        workflow_id: str | None = None,
        chain_override: Sequence[str] | None = None,
    ) -> GatewayResult:
        """Try the chain of (task, risk); see the module docstring for the contract.

        `chain_override` (a case's policy file, `model_routing`) replaces the configured chain;
        model names the configuration does not define are skipped with a warning, and when none
        is left the configured chain applies."""
        route = self._config.tasks.route(task)
        chain = route.routes[risk]
        if chain_override:
            known = [name for name in chain_override if name in self._config.models]
            unknown = [name for name in chain_override if name not in self._config.models]
            if unknown:
                log.warning("routing_override_unknown_models", task=str(task), models=unknown)
            if known:
                chain = known
        attempts: list[Attempt] = []
        best: Completion | None = None
        try:
            for position, name in enumerate(chain):
                attempt, completion = await self._attempt(
                    name, task, request, first=position == 0, min_confidence=route.min_confidence
                )
                attempts.append(attempt)
                if attempt.outcome in ACCEPTED and completion is not None:
                    return GatewayResult(
                        task, completion.output, completion.model_id, False, tuple(attempts)
                    )
                # A low-confidence answer is the chain working as designed; failures are not.
                low = attempt.outcome is CallOutcome.LOW_CONFIDENCE
                log.log(
                    logging.INFO if low else logging.WARNING,
                    "model_call_passed_over",
                    task=task.value,
                    model=name,
                    outcome=attempt.outcome.value,
                    error=attempt.error,
                    retry_after=attempt.retry_after,
                    case_id=case_id,
                    workflow_id=workflow_id,
                )
                if completion is not None and (
                    best is None
                    or (completion.output.threshold_confidence() or 0.0)
                    > (best.output.threshold_confidence() or 0.0)
                ):
                    best = completion
            if attempts and all(a.retryable for a in attempts):
                raise ModelsUnavailableError(task, attempts)
            log.info(
                "model_chain_exhausted",
                task=task.value,
                risk=risk.value,
                attempts=[a.model for a in attempts],
                case_id=case_id,
                workflow_id=workflow_id,
            )
            return GatewayResult(
                task,
                best.output if best else None,
                best.model_id if best else None,
                True,
                tuple(attempts),
            )
        finally:
            await self._write_ledger(task, attempts, case_id, workflow_id)

    def run_blocking(
        self,
        task: Task,
        request: TaskRequest,
        *,
        risk: RiskLevel = RiskLevel.MEDIUM,
        case_id: str | None = None,
        workflow_id: str | None = None,
        chain_override: Sequence[str] | None = None,
    ) -> GatewayResult:
        """`run` from synchronous code (activity threads), on the gateway's own loop."""
        future = self._loop.submit(
            self.run(
                task,
                request,
                risk=risk,
                case_id=case_id,
                workflow_id=workflow_id,
                chain_override=chain_override,
            )
        )
        return future.result()

    def record_local_blocking(
        self,
        task: str,
        model_id: str,
        *,
        latency_ms: int,
        provider: str = "embedded",
        case_id: str | None = None,
        workflow_id: str | None = None,
    ) -> Attempt:
        """Ledger row for embedded work that no chain routes (OCR of an image: the LLM
        providers send text): free, outcome `ok`, under `task`. From synchronous code."""
        attempt = Attempt(
            model=provider, model_id=model_id, outcome=CallOutcome.OK, latency_ms=latency_ms
        )
        self._loop.submit(self._write_ledger(task, [attempt], case_id, workflow_id)).result()
        return attempt

    async def chat(
        self,
        name: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        case_id: str | None = None,
        workflow_id: str | None = None,
    ) -> ChatResult:
        """One tool-calling turn with the OpenAI-compatible model `name` (agents use
        `tasks.agent.model`): through the model's circuit breaker, priced, and written to the
        ledger as task `agent`. No fallback: a conversation stays with its model. Raises the
        provider's error (an open circuit is a `RetryableProviderError` whose `retry_after` is
        the cooldown left); retrying is Temporal's job."""
        provider = self._providers.get(name)
        if not isinstance(provider, OpenAICompatibleProvider):
            raise NonRetryableProviderError(f"{name!r} is not an OpenAI-compatible chat model")
        definition = self._config.models[name]
        breaker_config = self._config.breaker_for(name)
        started = time.perf_counter()
        outcome, error, reply = CallOutcome.OK, None, None
        tokens_in = tokens_out = 0
        try:
            breaker = await self._breakers.get_breaker(
                name,
                threshold=breaker_config.failure_threshold,
                ttl=breaker_config.cooldown_seconds,
            )
            async with breaker:
                reply = await provider.chat(messages, tools=tools)
            tokens_in, tokens_out = reply.tokens_in, reply.tokens_out
        except OpenedState as opened:
            outcome, error = CallOutcome.BREAKER_OPEN, f"{name}: circuit open"
            remaining = opened.opened_at + breaker_config.cooldown_seconds - time.time()
            raise RetryableProviderError(error, retry_after=max(0.0, remaining)) from None
        except ProviderError as err:
            invalid = isinstance(err, InvalidOutputError)
            outcome = CallOutcome.INVALID_OUTPUT if invalid else CallOutcome.FAILED
            error = str(err)[:_MAX_ERROR_CHARS]
            tokens_in, tokens_out = err.tokens_in, err.tokens_out
            raise
        finally:
            cost = price_micro_usd(
                tokens_in, tokens_out, definition.input_usd_per_1m, definition.output_usd_per_1m
            )
            attempt = Attempt(
                model=name,
                model_id=reply.model_id if reply else definition.model or name,
                outcome=outcome,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_micro_usd=cost,
                latency_ms=round((time.perf_counter() - started) * 1000),
                error=error,
            )
            await self._write_ledger(AGENT_TASK, [attempt], case_id, workflow_id)
        return ChatResult(reply, name, cost)

    def chat_blocking(
        self,
        name: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
        case_id: str | None = None,
        workflow_id: str | None = None,
    ) -> ChatResult:
        """`chat` from synchronous code (activity threads), on the gateway's own loop."""
        future = self._loop.submit(
            self.chat(name, messages, tools=tools, case_id=case_id, workflow_id=workflow_id)
        )
        return future.result()

    async def _attempt(
        self,
        name: str,
        task: Task,
        request: TaskRequest,
        *,
        first: bool,
        min_confidence: float,
    ) -> tuple[Attempt, Completion | None]:
        provider = self._providers[name]
        definition = self._config.models[name]
        model_id = definition.model or name
        started = time.perf_counter()

        def failed(outcome: CallOutcome, err: ProviderError) -> tuple[Attempt, None]:
            retryable = isinstance(err, RetryableProviderError)
            attempt = Attempt(
                model=name,
                model_id=model_id,
                outcome=outcome,
                tokens_in=err.tokens_in,
                tokens_out=err.tokens_out,
                cost_micro_usd=price_micro_usd(
                    err.tokens_in,
                    err.tokens_out,
                    definition.input_usd_per_1m,
                    definition.output_usd_per_1m,
                ),
                latency_ms=round((time.perf_counter() - started) * 1000),
                error=str(err)[:_MAX_ERROR_CHARS],
                retryable=retryable,
                retry_after=err.retry_after if isinstance(err, RetryableProviderError) else None,
            )
            return attempt, None

        try:
            if provider.remote:
                breaker_config = self._config.breaker_for(name)
                breaker = await self._breakers.get_breaker(
                    name,
                    threshold=breaker_config.failure_threshold,
                    ttl=breaker_config.cooldown_seconds,
                )
                async with breaker:
                    completion = await provider.complete(task, request)
            else:
                completion = await provider.complete(task, request)
        except OpenedState as opened:
            cooldown = self._config.breaker_for(name).cooldown_seconds
            remaining = max(0.0, opened.opened_at + cooldown - time.time())
            err = RetryableProviderError(f"{name}: circuit open", retry_after=remaining)
            return failed(CallOutcome.BREAKER_OPEN, err)
        except RetryableProviderError as err:
            return failed(CallOutcome.FAILED, err)
        except InvalidOutputError as err:
            return failed(CallOutcome.INVALID_OUTPUT, err)
        except ProviderError as err:
            return failed(CallOutcome.FAILED, err)

        confidence = completion.output.threshold_confidence()
        if confidence is not None and confidence < min_confidence:
            outcome = CallOutcome.LOW_CONFIDENCE
        else:
            outcome = CallOutcome.OK if first else CallOutcome.FALLBACK
        attempt = Attempt(
            model=name,
            model_id=completion.model_id,
            outcome=outcome,
            tokens_in=completion.tokens_in,
            tokens_out=completion.tokens_out,
            cost_micro_usd=price_micro_usd(
                completion.tokens_in,
                completion.tokens_out,
                definition.input_usd_per_1m,
                definition.output_usd_per_1m,
            ),
            latency_ms=round((time.perf_counter() - started) * 1000),
            error=(
                f"confidence {confidence:.3f} below {min_confidence:g}"
                if outcome is CallOutcome.LOW_CONFIDENCE
                else None
            ),
        )
        return attempt, completion

    async def _write_ledger(
        self,
        task: Task | str,
        attempts: Sequence[Attempt],
        case_id: str | None,
        workflow_id: str | None,
    ) -> None:
        observe_attempts(task, attempts)
        if self._ledger is None or not attempts:
            return
        rows = [
            ModelCall(
                task=str(task),
                provider=a.model,
                model=a.model_id,
                tokens_in=a.tokens_in,
                tokens_out=a.tokens_out,
                latency_ms=a.latency_ms,
                cost_micro_usd=a.cost_micro_usd,
                outcome=a.outcome.value,
                error=a.error,
                workflow_id=workflow_id,
                case_id=case_id,
            )
            for a in attempts
        ]
        try:
            await asyncio.to_thread(self._ledger.record, rows)
        except SQLAlchemyError as err:
            # Spend is also in the metrics; a ledger outage must not fail (and re-bill) the case.
            log.error(
                "model_ledger_write_failed",
                task=str(task),
                case_id=case_id,
                rows=len(rows),
                error=type(err).__name__,
            )

    def _on_breaker_event(self, name: str, event_type: str, event: Any) -> None:
        if event_type == "state_changed":
            log.warning("model_breaker_state_changed", model=name, state=event.state)
            metrics.BREAKER_OPEN.labels(provider=metrics.label(name)).set(
                _BREAKER_LEVEL.get(event.state, 0.0)
            )

    # --- Lifecycle --------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the pooled HTTP clients (on the loop that used them)."""
        for client in self._clients:
            await client.aclose()

    def close(self) -> None:
        """From synchronous code: close the clients on the gateway's loop, stop the loop."""
        if self._loop.started:
            self._loop.submit(self.aclose()).result(_CLOSE_TIMEOUT_SECONDS)
            self._loop.stop()
        elif self._clients:
            asyncio.run(self.aclose())
