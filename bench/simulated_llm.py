"""Simulated LLMs for the routing benchmark: an OpenAI-compatible server on 127.0.0.1.

    server = SimulatedLLMServer({"sim-small": small, "sim-premium": premium}, api_key="...")
    with server:
        ... point `openai_compatible` models at server.base_url ...

No real language model is called. Each simulated model is an honest classifier that has never
seen the labels of the messages it is asked about: it reads the message text out of the real
chat-completions request the gateway sends (system prompt, structured-output schema, user
message as JSON) and answers `{"intent": ..., "confidence": ...}` with its own prediction and
probability, rounded to two decimals as a model would write it. Usage is computed from the
request and the answer (about 4 characters a token, plus OpenAI's per-message overhead; the JSON
schema counts as input, as structured outputs do), and the answer is held back until the
model's latency has passed: a fixed time to first token plus a time per output token.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from activities.types import Intent

__all__ = ["SimulatedLLMServer", "SimulatedModel", "approx_tokens"]

CHARS_PER_TOKEN = 4
# OpenAI's chat format: a few tokens around every message and to prime the reply.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
INTENT_SCHEMA = "IntentOutput"


def approx_tokens(text: str) -> int:
    """The usual rule of thumb for English with OpenAI tokenizers: ~4 characters a token."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class SimulatedModel:
    """One model id on the server: how it classifies and how long it takes."""

    classify: Callable[[str], tuple[Intent, float]]
    description: str
    first_token_ms: float
    per_output_token_ms: float

    def latency_seconds(self, tokens_out: int) -> float:
        return (self.first_token_ms + self.per_output_token_ms * tokens_out) / 1000


class SimulatedLLMServer:
    """Chat completions for intent classification; anything else is a 4xx, as upstream."""

    def __init__(self, models: Mapping[str, SimulatedModel], *, api_key: str) -> None:
        self.models = dict(models)
        self._api_key = api_key
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.tokens_in: Counter[str] = Counter()
        self.tokens_out: Counter[str] = Counter()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> SimulatedLLMServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def answer(self, headers: Mapping[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) for one request: the whole simulated model, without HTTP."""
        if headers.get("authorization") != f"Bearer {self._api_key}":
            return 401, _error("invalid API key", "invalid_api_key")
        if not isinstance(body, dict):
            return 400, _error("the body must be a JSON object")
        model_id = body.get("model")
        model = self.models.get(str(model_id))
        if model is None:
            return 404, _error(f"the model {model_id!r} does not exist", "model_not_found")
        schema = (body.get("response_format") or {}).get("json_schema") or {}
        if schema.get("name") != INTENT_SCHEMA:
            return 400, _error("this simulated model only classifies intents")
        messages = body.get("messages") or []
        try:
            user = next(m for m in reversed(messages) if m.get("role") == "user")
            text = str(json.loads(user["content"])["text"])
        except (StopIteration, KeyError, TypeError, ValueError, AttributeError):
            return 400, _error("expected a user message holding the JSON request")

        started = time.perf_counter()
        intent, probability = model.classify(text)
        content = json.dumps({"intent": intent.value, "confidence": round(probability, 2)})
        tokens_in = TOKENS_PER_REPLY + approx_tokens(json.dumps(schema.get("schema") or {}))
        tokens_in += sum(
            TOKENS_PER_MESSAGE + approx_tokens(str(m.get("content"))) for m in messages
        )
        tokens_out = approx_tokens(content)
        # The model's own compute counts towards its latency.
        remaining = model.latency_seconds(tokens_out) - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
        with self._lock:
            self.requests[str(model_id)] += 1
            self.tokens_in[str(model_id)] += tokens_in
            self.tokens_out[str(model_id)] += tokens_out
            number = self.requests[str(model_id)]
        return 200, {
            "id": f"chatcmpl-sim-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_id,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm
            # and delayed ACKs add ~40 ms to every answer, more than the simulated latency.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    status, payload = 404, _error(f"no route {self.path}")
                else:
                    try:
                        body: Any = json.loads(raw)
                    except ValueError:
                        body = None
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    status, payload = server.answer(headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
