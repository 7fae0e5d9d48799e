"""A model provider on loopback that fails on demand: the intent model of `bench.simulated_llm`
(OpenAI-compatible chat completions), which while `failing` answers in turn 429 (with
`Retry-After`), 500, and nothing at all until the client's timeout has passed.

Also the models file that routes the intent task to it alone (no fallback), so a failing
provider holds cases up instead of being routed around.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from activities.types import Intent
from bench.simulated_llm import SimulatedLLMServer, SimulatedModel

__all__ = ["API_KEY_ENV", "MODEL_ID", "FaultyLLM", "models_file"]

MODEL_ID = "chaos-flaky"
API_KEY_ENV = "PODIUM_CHAOS_LLM_KEY"
CLIENT_TIMEOUT_S = 3
HANG_S = CLIENT_TIMEOUT_S + 2
FAULTS = ("429", "500", "timeout")


def _classify(text: str) -> tuple[Intent, float]:
    return Intent.REFUND_REQUEST, 0.97


class FaultyLLM(SimulatedLLMServer):
    """Classifies every message as a refund request, unless `failing`."""

    def __init__(self, api_key: str) -> None:
        model = SimulatedModel(
            classify=_classify,
            description="always a refund request",
            first_token_ms=20,
            per_output_token_ms=1,
        )
        super().__init__({MODEL_ID: model}, api_key=api_key)
        self.failing = False
        # Seconds every answer is held back while set: a slow provider, so that many model
        # activities are in flight at once (R2 kills workers while they are).
        self.hold_s = 0.0
        self.answers: Counter[str] = Counter()
        self._turn = 0
        self._faults_lock = threading.Lock()
        # A client that gave up on a hang leaves a broken pipe: expected, not worth a traceback.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]

    def __enter__(self) -> FaultyLLM:
        super().__enter__()
        return self

    def answer(self, headers: Mapping[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        if self.failing:
            with self._faults_lock:
                fault = FAULTS[self._turn % len(FAULTS)]
                self._turn += 1
                self.answers[fault] += 1
            if fault == "timeout":
                time.sleep(HANG_S)
                return 504, {"error": {"message": "too late", "type": "timeout"}}
            if fault == "429":
                return 429, {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}
            return 500, {"error": {"message": "upstream broke", "type": "server_error"}}
        if self.hold_s > 0:
            time.sleep(self.hold_s)
        status, payload = super().answer(headers, body)
        self.answers[str(status)] += 1
        return status, payload


def models_file(
    folder: Path, base_url: str, prompts_dir: Path, timeout_s: float = CLIENT_TIMEOUT_S
) -> Path:
    """A models file: intent only from the faulty provider, everything else embedded.
    `timeout_s`: how long the model client waits for an answer."""
    embedded = "{low: [embedded], medium: [embedded], high: [embedded]}"
    text = f"""version: 1
breaker:
  failure_threshold: 5
  cooldown_seconds: 10
prompts_dir: {prompts_dir}
models:
  flaky:
    kind: openai_compatible
    base_url: {base_url}
    model: {MODEL_ID}
    api_key_env: {API_KEY_ENV}
    input_usd_per_1m: 0.15
    output_usd_per_1m: 0.60
    timeout_seconds: {timeout_s:g}
    max_output_tokens: 200
    temperature: 0
  embedded:
    kind: embedded
tasks:
  intent:
    min_confidence: 0.8
    routes: {{low: [flaky], medium: [flaky], high: [flaky]}}
  sentiment:
    routes: {embedded}
  draft:
    routes: {embedded}
  extract:
    routes: {embedded}
  summary:
    routes: {embedded}
"""
    path = folder / "models.chaos.yaml"
    path.write_text(text)
    return path
