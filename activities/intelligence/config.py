"""The models file (`config/models.yaml`): which models exist and which ones each task uses.

    breaker: {failure_threshold: 5, cooldown_seconds: 30}
    models:
      embedded: {kind: embedded}
      small:
        kind: openai_compatible
        base_url: https://api.example.com/v1
        model: small-model-id
        api_key_env: EXAMPLE_API_KEY       # the variable's NAME; the key stays in the environment
        input_usd_per_1m: 0.15
        output_usd_per_1m: 0.60
        timeout_seconds: 20
    tasks:
      intent:
        min_confidence: 0.5
        routes: {low: [embedded], medium: [small, embedded], high: [small, embedded]}
      agent: {model: small}                # optional: the tool-calling agent's chat model

Each route is an ordered chain tried until one model gives an acceptable answer. Prompts for
LLM providers are read from `prompts_dir` (relative to the models file): `<task>.md`. Every
error names the file and the field.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from activities.intelligence.tasks import Task
from activities.types import RiskLevel

__all__ = [
    "DEFAULTED_TASKS",
    "DEFAULT_MODELS_FILE",
    "AgentRoute",
    "BreakerConfig",
    "ModelDefinition",
    "ModelsConfig",
    "ModelsConfigError",
    "ProviderKind",
    "TaskRoute",
    "load_models_config",
    "load_prompts",
]

DEFAULT_MODELS_FILE = Path(__file__).resolve().parents[2] / "config" / "models.yaml"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ModelsConfigError(ValueError):
    """The models file is missing, unreadable or invalid; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderKind(StrEnum):
    EMBEDDED = "embedded"
    OPENAI_COMPATIBLE = "openai_compatible"


class BreakerConfig(_Strict):
    """Per model: open after `failure_threshold` consecutive retryable failures, fail fast for
    `cooldown_seconds`, then let one probe through (half-open) and close on its success."""

    failure_threshold: int = Field(default=5, ge=1)
    cooldown_seconds: float = Field(default=30.0, gt=0)


class ModelDefinition(_Strict):
    kind: ProviderKind
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    model: str | None = Field(default=None, min_length=1)
    api_key_env: str | None = Field(default=None, pattern=_ENV_NAME)
    input_usd_per_1m: Decimal = Field(default=Decimal(0), ge=0)
    output_usd_per_1m: Decimal = Field(default=Decimal(0), ge=0)
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    breaker: BreakerConfig | None = Field(default=None, description="Overrides the default")

    @model_validator(mode="after")
    def _complete_for_its_kind(self) -> Self:
        if self.kind is ProviderKind.OPENAI_COMPATIBLE:
            missing = [f for f in ("base_url", "model", "api_key_env") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"openai_compatible models need {', '.join(missing)}")
        return self


class TaskRoute(_Strict):
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Answers below this fall through the chain"
    )
    routes: dict[RiskLevel, list[str]]
    few_shot_per_intent: int = Field(
        default=0,
        ge=0,
        le=20,
        description="intent only: this many labelled training examples of every intent follow "
        "the LLM's system prompt (0: the prompt alone)",
    )

    @model_validator(mode="after")
    def _every_risk_level(self) -> Self:
        missing = [level.value for level in RiskLevel if not self.routes.get(level)]
        if missing:
            raise ValueError(f"routes needs a non-empty chain for {', '.join(missing)}")
        return self


class AgentRoute(_Strict):
    """The chat model of tool-calling agents (`workflows/components/agent.py`): one
    OpenAI-compatible model by its name in the models file. Without it agents hand their cases
    to a person: the embedded models cannot call tools."""

    model: str = Field(min_length=1)


# Tasks added after the first models files: left out of a file, they run on its embedded model.
DEFAULTED_TASKS = (Task.EXTRACT, Task.SUMMARY)


class TasksConfig(_Strict):
    intent: TaskRoute
    sentiment: TaskRoute
    draft: TaskRoute
    extract: TaskRoute
    summary: TaskRoute
    agent: AgentRoute | None = None

    def route(self, task: Task) -> TaskRoute:
        route: TaskRoute = getattr(self, task.value)
        return route


class ModelsConfig(_Strict):
    version: Literal[1] = 1
    breaker: BreakerConfig = BreakerConfig()
    prompts_dir: Path = Field(default=Path("prompts"), description="Relative to the models file")
    models: dict[str, ModelDefinition] = Field(min_length=1)
    tasks: TasksConfig

    @model_validator(mode="before")
    @classmethod
    def _default_routes(cls, data: Any) -> Any:
        """A file without `extract` or `summary` routes them to its (first) embedded model."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            return data
        missing = [task.value for task in DEFAULTED_TASKS if task.value not in data["tasks"]]
        models = data.get("models")
        if not missing or not isinstance(models, dict):
            return data
        embedded = next((name for name, model in models.items() if _is_embedded(model)), None)
        if embedded is None:
            return data  # validation then names the missing route
        chain = {level.value: [embedded] for level in RiskLevel}
        return {**data, "tasks": {**data["tasks"], **{task: {"routes": chain} for task in missing}}}

    @model_validator(mode="after")
    def _routes_name_known_models(self) -> Self:
        for task in Task:
            for level, chain in self.tasks.route(task).routes.items():
                for index, name in enumerate(chain):
                    if name not in self.models:
                        raise ValueError(
                            f"tasks.{task.value}.routes.{level.value}[{index}]: unknown model "
                            f"{name!r} (models: {', '.join(sorted(self.models))})"
                        )
        agent = self.tasks.agent
        if agent is not None:
            definition = self.models.get(agent.model)
            if definition is None:
                raise ValueError(
                    f"tasks.agent.model: unknown model {agent.model!r} "
                    f"(models: {', '.join(sorted(self.models))})"
                )
            if definition.kind is not ProviderKind.OPENAI_COMPATIBLE:
                raise ValueError(
                    f"tasks.agent.model: {agent.model!r} is {definition.kind.value}; the agent "
                    "needs an openai_compatible model (tool calling)"
                )
        return self

    def breaker_for(self, name: str) -> BreakerConfig:
        return self.models[name].breaker or self.breaker

    @property
    def uses_remote_models(self) -> bool:
        return any(m.kind is not ProviderKind.EMBEDDED for m in self.models.values())


def _is_embedded(model: object) -> bool:
    if isinstance(model, ModelDefinition):
        return model.kind is ProviderKind.EMBEDDED
    return isinstance(model, dict) and model.get("kind") == ProviderKind.EMBEDDED.value


def _describe(err: ValidationError) -> str:
    lines = []
    for item in err.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{location}: {message}" if location else message)
    return "; ".join(lines)


def load_models_config(path: Path | None = None) -> ModelsConfig:
    """Read and validate the models file; `ModelsConfigError` names the file and the field."""
    path = path or DEFAULT_MODELS_FILE
    try:
        raw: object = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelsConfigError(f"{path}: cannot read the models file: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ModelsConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ModelsConfigError(f"{path}: expected a mapping at the top level")
    try:
        return ModelsConfig.model_validate(raw)
    except ValidationError as err:
        raise ModelsConfigError(f"{path}: {_describe(err)}") from err


def load_prompts(
    config: ModelsConfig, models_file: Path | None = None, datasets_dir: Path | None = None
) -> dict[Task, str]:
    """The system prompt of every task an LLM may answer; none for tasks routed only to
    embedded models. The intent prompt gains `few_shot_per_intent` labelled examples of every
    intent from `<datasets_dir>/intents/train.jsonl` when the intent route asks for them."""
    if not config.uses_remote_models:
        return {}
    base = (models_file or DEFAULT_MODELS_FILE).parent
    directory = base / config.prompts_dir  # an absolute prompts_dir replaces the base
    prompts = {}
    for task in Task:
        chains = config.tasks.route(task).routes.values()
        if all(config.models[name].kind is ProviderKind.EMBEDDED for c in chains for name in c):
            continue
        prompt_file = directory / f"{task.value}.md"
        try:
            prompts[task] = prompt_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ModelsConfigError(
                f"{models_file or DEFAULT_MODELS_FILE}: prompts_dir: cannot read {prompt_file}: "
                f"{err.strerror}"
            ) from err
    shots = config.tasks.intent.few_shot_per_intent
    if shots and Task.INTENT in prompts:
        prompts[Task.INTENT] = _with_examples(prompts[Task.INTENT], shots, datasets_dir)
    return prompts


def _with_examples(prompt: str, per_intent: int, datasets_dir: Path | None) -> str:
    """The intent prompt followed by labelled training examples (the same ones every time)."""
    # Here, not at the top: the classifier's libraries load only when a prompt wants examples.
    from activities.intelligence.embedded import DEFAULT_DATASETS_DIR, TRAIN_FILE
    from activities.intelligence.intent import few_shot_prompt, load_examples

    examples = load_examples((datasets_dir or DEFAULT_DATASETS_DIR) / TRAIN_FILE)
    return few_shot_prompt(prompt, examples, per_intent=per_intent)
