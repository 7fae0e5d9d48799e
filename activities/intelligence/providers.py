"""Model providers behind the gateway: the embedded models and OpenAI-compatible chat APIs.

A provider answers one task request with a validated output model, or raises one of a small
exception tree the gateway routes on:

    ProviderError
    ├── RetryableProviderError      408, 429, 5xx, timeouts, connection errors, garbled bodies
    ├── NonRetryableProviderError   any other 4xx, a missing API key, a refusal
    └── InvalidOutputError          the reply did not fit the schema, even after one repair

Providers never retry: the gateway falls back along its chain and Temporal retries the activity.
API keys are read from the environment variable the configuration names; they go out in the
`Authorization` header and nowhere else (not in messages, logs, reprs or the ledger).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

if TYPE_CHECKING:
    from activities.intelligence.embedded import EmbeddedModels

from activities.intelligence.tasks import (
    TASK_OUTPUTS,
    DraftOutput,
    DraftRequest,
    ExtractOutput,
    ExtractRequest,
    IntentOutput,
    IntentRequest,
    SentimentOutput,
    SentimentRequest,
    SummaryOutput,
    SummaryRequest,
    Task,
    TaskOutput,
    TaskRequest,
)

__all__ = [
    "ChatReply",
    "Completion",
    "EmbeddedProvider",
    "InvalidOutputError",
    "NonRetryableProviderError",
    "OpenAICompatibleProvider",
    "Provider",
    "ProviderError",
    "RetryableProviderError",
    "ToolCallRequest",
    "parse_retry_after",
    "response_format",
]

VADER_MODEL = "embedded:vader"
# Error texts taken from a provider's body are cut to this length.
_MAX_ERROR_CHARS = 300
_REPAIR_PROMPT = (
    "Your reply did not match the required JSON schema: {errors}. "
    "Reply again with only the corrected JSON object."
)


class ProviderError(Exception):
    """A provider could not answer. Tokens already spent on the attempt are carried along so
    that the ledger can still charge them."""

    def __init__(self, message: str, *, tokens_in: int = 0, tokens_out: int = 0) -> None:
        super().__init__(message)
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out


class RetryableProviderError(ProviderError):
    """Worth trying again later: `retry_after` is the provider's own hint, in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> None:
        super().__init__(message, tokens_in=tokens_in, tokens_out=tokens_out)
        self.retry_after = retry_after


class NonRetryableProviderError(ProviderError):
    """The same request would fail the same way again."""


class InvalidOutputError(ProviderError):
    """The model's reply failed validation twice (the original and the one repair)."""


@dataclass(frozen=True)
class Completion:
    output: TaskOutput
    model_id: str
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass(frozen=True)
class ToolCallRequest:
    """A function call the model asks for; `arguments` is its JSON text, not yet validated."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ChatReply:
    """One assistant turn of a tool-calling conversation: a final text or tool calls.

    `message` is the assistant message in the OpenAI format, normalized, to append to the
    conversation as is (the next request must repeat the tool calls it answers)."""

    message: dict[str, Any]
    content: str | None
    tool_calls: tuple[ToolCallRequest, ...]
    model_id: str
    tokens_in: int = 0
    tokens_out: int = 0


class Provider(Protocol):
    """One configured model. `name` is its key in the models file."""

    @property
    def name(self) -> str: ...

    @property
    def remote(self) -> bool:
        """True when calls leave the process (and so go through a circuit breaker)."""
        ...

    async def complete(self, task: Task, request: TaskRequest) -> Completion: ...


# --- Embedded -----------------------------------------------------------------------------------


class EmbeddedProvider:
    """The embedded models: free, offline, always available. CPU work runs in a thread so the
    gateway's event loop keeps serving HTTP providers meanwhile."""

    remote = False

    def __init__(self, name: str, models: EmbeddedModels) -> None:
        self._name = name
        self._models = models

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, task: Task, request: TaskRequest) -> Completion:
        return await asyncio.to_thread(self._complete, task, request)

    def _complete(self, task: Task, request: TaskRequest) -> Completion:
        if task is Task.INTENT and isinstance(request, IntentRequest):
            intent, confidence = self._models.classify_intent(request.text)
            return Completion(
                IntentOutput(intent=intent, confidence=confidence), self._models.intent_model
            )
        if task is Task.SENTIMENT and isinstance(request, SentimentRequest):
            sentiment, score = self._models.sentiment(request.text)
            return Completion(SentimentOutput(sentiment=sentiment, score=score), VADER_MODEL)
        if task is Task.DRAFT and isinstance(request, DraftRequest):
            # The template was rendered by the activity (it validates the request); the
            # embedded answer is that approved text, unchanged.
            return Completion(DraftOutput(text=request.draft), self._models.reply_model)
        if task is Task.EXTRACT and isinstance(request, ExtractRequest):
            # `ValueError` for an unknown expected field: a bad request, raised to the caller.
            from activities.intelligence.extract import extract_fields

            fields = extract_fields(request.text, today=request.today, expected=request.expected)
            output = ExtractOutput.model_validate(fields.model_dump(exclude={"model"}))
            return Completion(output, fields.model)
        if task is Task.SUMMARY and isinstance(request, SummaryRequest):
            from activities.intelligence.summarize import summarise  # sumy: loaded on first use

            summary = summarise(request.text, request.max_sentences)
            return Completion(
                SummaryOutput(
                    text=summary.text, sentences=summary.sentences, confidence=summary.confidence
                ),
                summary.model,
            )
        raise TypeError(f"embedded provider: {type(request).__name__} is not a {task} request")


# --- OpenAI-compatible --------------------------------------------------------------------------


def response_format(output_type: type[BaseModel]) -> dict[str, Any]:
    """Structured outputs, strict: the model can only answer with this schema."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": output_type.__name__,
            "schema": output_type.model_json_schema(),
            "strict": True,
        },
    }


def parse_retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _validation_summary(err: ValidationError) -> str:
    parts = []
    for item in err.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)[:_MAX_ERROR_CHARS]


class OpenAICompatibleProvider:
    """Chat completions with structured outputs against any OpenAI-compatible API.

    `client` is the pooled `httpx.AsyncClient` of the upstream (shared by every model on the
    same base URL) and must not retry. A reply that fails validation gets one repair turn: the
    validation errors go back to the model, which is asked for corrected JSON.
    """

    remote = True

    def __init__(
        self,
        name: str,
        *,
        client: httpx.AsyncClient,
        model: str,
        api_key_env: str,
        prompts: dict[Task, str],
        timeout_seconds: float,
        max_output_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        self._name = name
        self._client = client
        self._model = model
        self._api_key_env = api_key_env
        key = os.environ.get(api_key_env, "").strip()
        self._api_key = SecretStr(key) if key else None
        self._prompts = prompts
        self._timeout = timeout_seconds
        self._max_output_tokens = max_output_tokens
        self._temperature = temperature

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider(name={self._name!r}, model={self._model!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    def _require_key(self) -> SecretStr:
        if self._api_key is None:
            raise NonRetryableProviderError(
                f"{self._name}: environment variable {self._api_key_env} is not set"
            )
        return self._api_key

    async def complete(self, task: Task, request: TaskRequest) -> Completion:
        api_key = self._require_key()
        output_type = TASK_OUTPUTS[task]
        messages: list[dict[str, str]] = [
            {"role": "system", "content": self._prompts[task]},
            {"role": "user", "content": request.model_dump_json()},
        ]
        context = request.validation_context()
        tokens_in = tokens_out = 0
        for turn in ("answer", "repair"):
            content, model_id, used_in, used_out = await self._chat(api_key, messages, output_type)
            tokens_in, tokens_out = tokens_in + used_in, tokens_out + used_out
            try:
                output = output_type.model_validate_json(content, context=context)
            except ValidationError as err:
                if turn == "repair":
                    raise InvalidOutputError(
                        f"{self._name}: invalid {task} output after one repair: "
                        f"{_validation_summary(err)}",
                        tokens_in=tokens_in,
                        tokens_out=tokens_out,
                    ) from None
                messages += [
                    {"role": "assistant", "content": content},
                    {
                        "role": "user",
                        "content": _REPAIR_PROMPT.format(errors=_validation_summary(err)),
                    },
                ]
                continue
            return Completion(output, model_id, tokens_in, tokens_out)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _chat(
        self, api_key: SecretStr, messages: list[dict[str, str]], output_type: type[TaskOutput]
    ) -> tuple[str, str, int, int]:
        """One chat completion: (content, model id, prompt tokens, completion tokens)."""
        body: dict[str, Any] = {
            "model": self._model,
            "messages": messages,
            "response_format": response_format(output_type),
        }
        if self._max_output_tokens is not None:
            body["max_tokens"] = self._max_output_tokens
        if self._temperature is not None:
            body["temperature"] = self._temperature
        response = await self._send(api_key, body)
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice["message"]
            usage = payload.get("usage") or {}
            tokens_in = int(usage.get("prompt_tokens") or 0)
            tokens_out = int(usage.get("completion_tokens") or 0)
            model_id = str(payload.get("model") or self._model)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A proxy's error page or a truncated body: the upstream is not healthy.
            raise RetryableProviderError(
                f"{self._name}: HTTP {response.status_code} with a malformed chat completion"
            ) from None
        if message.get("refusal"):
            raise NonRetryableProviderError(
                f"{self._name}: the model refused: {self._scrub(str(message['refusal']))}",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        content = message.get("content")
        return (content if isinstance(content, str) else ""), model_id, tokens_in, tokens_out

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] = (),
    ) -> ChatReply:
        """One assistant turn with function calling (`tools` in the OpenAI format).

        The reply is a final text or a list of tool calls. A reply with neither is
        `InvalidOutputError`; a malformed tool call (no id or name) is treated like any garbled
        body: retryable. Arguments are passed on unvalidated: the caller owns their schema.
        """
        api_key = self._require_key()
        body: dict[str, Any] = {"model": self._model, "messages": [dict(m) for m in messages]}
        if tools:
            body["tools"] = [dict(tool) for tool in tools]
            body["tool_choice"] = "auto"
        if self._max_output_tokens is not None:
            body["max_tokens"] = self._max_output_tokens
        if self._temperature is not None:
            body["temperature"] = self._temperature
        response = await self._send(api_key, body)
        try:
            payload = response.json()
            message = payload["choices"][0]["message"]
            usage = payload.get("usage") or {}
            tokens_in = int(usage.get("prompt_tokens") or 0)
            tokens_out = int(usage.get("completion_tokens") or 0)
            model_id = str(payload.get("model") or self._model)
            calls = tuple(
                ToolCallRequest(
                    id=str(call["id"]),
                    name=str(call["function"]["name"]),
                    arguments=str(call["function"].get("arguments") or "{}"),
                )
                for call in message.get("tool_calls") or []
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise RetryableProviderError(
                f"{self._name}: HTTP {response.status_code} with a malformed chat completion"
            ) from None
        if message.get("refusal"):
            raise NonRetryableProviderError(
                f"{self._name}: the model refused: {self._scrub(str(message['refusal']))}",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        content = message.get("content")
        text = content if isinstance(content, str) and content.strip() else None
        if text is None and not calls:
            raise InvalidOutputError(
                f"{self._name}: the reply has neither text nor tool calls",
                tokens_in=tokens_in,
                tokens_out=tokens_out,
            )
        normalized: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            normalized["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in calls
            ]
        return ChatReply(normalized, text, calls, model_id, tokens_in, tokens_out)

    async def _send(self, api_key: SecretStr, body: dict[str, Any]) -> httpx.Response:
        """POST a chat completion; transport failures and error statuses become provider
        errors."""
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"}
        try:
            response = await self._client.post(
                "chat/completions", json=body, headers=headers, timeout=self._timeout
            )
        except httpx.TimeoutException:
            raise RetryableProviderError(
                f"{self._name}: no answer within {self._timeout:g} s"
            ) from None
        except httpx.TransportError as err:
            raise RetryableProviderError(
                f"{self._name}: {type(err).__name__} talking to the upstream"
            ) from None
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        message = f"{self._name}: HTTP {status}"
        if status not in (401, 403):  # auth errors may echo part of the key: say nothing more
            detail = self._error_detail(response)
            if detail:
                message = f"{message}: {detail}"
        if status in (408, 429) or status >= 500:
            raise RetryableProviderError(message, retry_after=parse_retry_after(response.headers))
        raise NonRetryableProviderError(message)

    def _error_detail(self, response: httpx.Response) -> str:
        try:
            error = response.json().get("error")
            detail = error.get("message") if isinstance(error, dict) else error
        except (ValueError, AttributeError):
            detail = response.text
        return self._scrub(str(detail or "").strip())[:_MAX_ERROR_CHARS]

    def _scrub(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.get_secret_value(), "***")
        return text
