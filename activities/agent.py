"""Activities of the tool-calling agent: its transcript, kept in the database, and its model turns.

The agent loop (`workflows/components/agent.py`) carries only a `TranscriptRef` (transcript id
and the number of writes it includes); the messages live in `agent_transcripts`, one row per
write, so workflow history never holds the conversation.

- `store_transcript`: append messages (the opening ones, with a system prompt read from
  `config/prompts/<prompt>.md`) -> the new reference.
- `load_transcript`: the messages of a reference, for APIs and tests (not for workflows).
- `agent_next_step`: load the transcript, ask the agent's chat model (`tasks.agent.model` in the
  models file, through the gateway: circuit breaker, cost ledger) with the allowlisted tools,
  store the assistant message and return a small result: the final answer, or the tool calls.
  A retry whose first attempt already stored the reply returns that reply without asking (and
  paying) again. Errors: no chat model configured, a 4xx, a refusal or an empty reply fail
  without retry (the process hands the case to a person); 408/429/5xx, timeouts and an open
  circuit are retryable, with the upstream's `Retry-After` as the next retry delay.
- `append_tool_result`: store the answers to one step's tool calls (results, refusals, denials).

All are synchronous (blocking database work on the worker's thread pool); the model call runs on
the gateway's own event loop, where its pooled HTTP clients live.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent_types import (
    AgentStepInput,
    AgentStepResult,
    AppendToolResultInput,
    LoadTranscriptInput,
    LoadTranscriptResult,
    StoreTranscriptInput,
    ToolCall,
    TranscriptRef,
)
from activities.intelligence.config import DEFAULT_MODELS_FILE
from activities.intelligence.gateway import ModelGateway
from activities.intelligence.providers import (
    InvalidOutputError,
    NonRetryableProviderError,
    RetryableProviderError,
)
from core.db import AgentTranscript

__all__ = ["DEFAULT_PROMPTS_DIR", "NO_CHAT_MODEL", "AgentActivities"]

DEFAULT_PROMPTS_DIR = DEFAULT_MODELS_FILE.parent / "prompts"
NO_CHAT_MODEL = (
    "no chat model is configured for agents: set tasks.agent.model in the models file to an "
    "openai_compatible model (see config/models.openai.example.yaml)"
)


class AgentActivities:
    def __init__(
        self, engine: Engine, gateway: ModelGateway | None, *, prompts_dir: Path | None = None
    ) -> None:
        """`gateway`: None on a worker that serves the transcript activities and not the
        model turns (`agent_next_step` runs on the models' worker)."""
        self._engine = engine
        self._gateway = gateway
        self._prompts_dir = prompts_dir or DEFAULT_PROMPTS_DIR
        self._prompts: dict[str, str] = {}

    # --- Transcript ---------------------------------------------------------------------------

    @activity.defn(name="store_transcript")
    def store_transcript(self, input: StoreTranscriptInput) -> TranscriptRef:
        messages = list(input.messages)
        if input.prompt is not None:
            messages.insert(0, {"role": "system", "content": self._prompt(input.prompt)})
        if not messages:
            raise ApplicationError(
                "store_transcript needs at least one message", type="EmptyWrite", non_retryable=True
            )
        ref, _ = self._append(input.transcript, input.workflow_id, messages)
        return ref

    @activity.defn(name="load_transcript")
    def load_transcript(self, input: LoadTranscriptInput) -> LoadTranscriptResult:
        messages = self._load(input.transcript)
        shown = messages[-input.last :] if input.last else messages
        return LoadTranscriptResult(
            transcript=input.transcript, messages=shown, total=len(messages)
        )

    @activity.defn(name="append_tool_result")
    def append_tool_result(self, input: AppendToolResultInput) -> TranscriptRef:
        ref, row = self._append(
            input.transcript, input.workflow_id, [result.message() for result in input.results]
        )
        if row.model is not None:
            raise _conflict(input.transcript, "a model turn")
        return ref

    # --- Model turns --------------------------------------------------------------------------

    @activity.defn(name="agent_next_step")
    def agent_next_step(self, input: AgentStepInput) -> AgentStepResult:
        if self._gateway is None:
            raise RuntimeError("agent_next_step is served by the models' worker")
        route = self._gateway.config.tasks.agent
        if route is None:
            raise ApplicationError(NO_CHAT_MODEL, type="NoChatModel", non_retryable=True)
        ref = input.transcript
        earlier = self._row(ref.transcript_id, ref.step + 1)
        if earlier is not None:
            # An earlier attempt stored the reply, then failed to report it: answer with it.
            return _step_result(ref, earlier, replayed=True)
        messages = self._load(ref)
        try:
            chat = self._gateway.chat_blocking(
                route.model,
                messages,
                tools=[tool.openai() for tool in input.tools],
                case_id=input.case_id,
                workflow_id=input.workflow_id,
            )
        except RetryableProviderError as err:
            delay = timedelta(seconds=err.retry_after) if err.retry_after is not None else None
            raise ApplicationError(
                str(err), type="ModelUnavailable", non_retryable=False, next_retry_delay=delay
            ) from None
        except InvalidOutputError as err:
            raise ApplicationError(
                str(err), type="InvalidModelOutput", non_retryable=True
            ) from None
        except NonRetryableProviderError as err:
            raise ApplicationError(
                str(err), type="ModelRequestFailed", non_retryable=True
            ) from None
        reply = chat.reply
        _, row = self._append(
            ref,
            input.workflow_id,
            [reply.message],
            model=reply.model_id,
            tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out,
            cost_micro_usd=chat.cost_micro_usd,
        )
        result = _step_result(ref, row, replayed=False)
        activity.logger.info(
            "agent_next_step.done",
            extra={
                "case_id": input.case_id,
                "step": result.transcript.step,
                "model": result.model,
                "tool_calls": [call.name for call in result.tool_calls],
                "final": result.answer is not None,
                "cost_micro_usd": result.cost_micro_usd,
            },
        )
        return result

    # --- Storage ------------------------------------------------------------------------------

    def _append(
        self,
        ref: TranscriptRef,
        workflow_id: str,
        messages: list[dict[str, Any]],
        *,
        model: str | None = None,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost_micro_usd: int = 0,
    ) -> tuple[TranscriptRef, AgentTranscript]:
        """Write `messages` as step `ref.step + 1`; if that step exists (a retry, or a racing
        attempt), return the row already there."""
        step = ref.step + 1
        with Session(self._engine) as session:
            row = AgentTranscript(
                id=ref.transcript_id,
                step=step,
                workflow_id=workflow_id,
                messages=messages,
                model=model,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                cost_micro_usd=cost_micro_usd,
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
                existing = session.get(AgentTranscript, (ref.transcript_id, step))
                if existing is None:
                    raise
                if existing.workflow_id != workflow_id:
                    raise _conflict(ref, f"workflow {existing.workflow_id}") from None
                return TranscriptRef(transcript_id=ref.transcript_id, step=step), existing
            session.refresh(row)
            return TranscriptRef(transcript_id=ref.transcript_id, step=step), row

    def _row(self, transcript_id: str, step: int) -> AgentTranscript | None:
        with Session(self._engine) as session:
            return session.get(AgentTranscript, (transcript_id, step))

    def _load(self, ref: TranscriptRef) -> list[dict[str, Any]]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(AgentTranscript)
                .where(AgentTranscript.id == ref.transcript_id, AgentTranscript.step <= ref.step)
                .order_by(col(AgentTranscript.step))
            ).all()
        if [row.step for row in rows] != list(range(1, ref.step + 1)):
            raise ApplicationError(
                f"transcript {ref.transcript_id} is missing writes up to step {ref.step}",
                type="TranscriptIncomplete",
                non_retryable=True,
            )
        return [message for row in rows for message in row.messages]

    def _prompt(self, name: str) -> str:
        if name not in self._prompts:
            path = self._prompts_dir / f"{name}.md"
            try:
                self._prompts[name] = path.read_text(encoding="utf-8").strip()
            except OSError as err:
                raise ApplicationError(
                    f"cannot read the prompt {path}: {err.strerror}",
                    type="UnknownPrompt",
                    non_retryable=True,
                ) from None
        return self._prompts[name]


def _conflict(ref: TranscriptRef, holder: str) -> ApplicationError:
    return ApplicationError(
        f"transcript {ref.transcript_id} step {ref.step + 1} is already held by {holder}",
        type="TranscriptConflict",
        non_retryable=True,
    )


def _step_result(ref: TranscriptRef, row: AgentTranscript, *, replayed: bool) -> AgentStepResult:
    message = row.messages[0] if len(row.messages) == 1 else None
    if row.model is None or message is None or message.get("role") != "assistant":
        raise _conflict(ref, "a write that is not a model turn")
    calls = [
        ToolCall(
            id=str(call["id"]),
            name=str(call["function"]["name"]),
            arguments=str(call["function"]["arguments"]),
        )
        for call in message.get("tool_calls") or []
    ]
    content = message.get("content")
    return AgentStepResult(
        transcript=TranscriptRef(transcript_id=ref.transcript_id, step=row.step),
        answer=None if calls else (content if isinstance(content, str) else None),
        tool_calls=calls,
        model=row.model,
        tokens_in=row.tokens_in,
        tokens_out=row.tokens_out,
        cost_micro_usd=row.cost_micro_usd,
        replayed=replayed,
    )
