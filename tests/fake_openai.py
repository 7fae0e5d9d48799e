"""A real OpenAI-compatible HTTP server on 127.0.0.1, scripted per test.

    with FakeOpenAI() as server:
        server.enqueue(chat_completion({"intent": "refund_request", "confidence": 0.9}))
        server.enqueue(Scripted(status=429, headers={"Retry-After": "7"}))
        ... point a provider at server.base_url ...
        assert 2 == server.request_count

Each POST takes the next scripted response (status, headers, body, delay) in order; with none
left it answers 500. Every request is recorded (path, headers, JSON body). The server runs on
its own thread, so both async tests and synchronous activity tests can use it, and it stops
itself after `max_lifetime` seconds should a test forget to.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakeOpenAI", "RecordedRequest", "Scripted", "chat_completion", "tool_calls"]


@dataclass
class Scripted:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes -> sent as is; None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


def chat_completion(
    content: Any,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    model: str | None = None,
    refusal: str | None = None,
) -> Scripted:
    """A 200 chat completion whose message content is `content` (JSON-encoded unless a str)."""
    text = content if isinstance(content, str) else json.dumps(content)
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": refusal},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if model is not None:
        body["model"] = model
    return Scripted(body=body)


def tool_calls(
    *calls: tuple[str, Any],
    content: str | None = None,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    model: str | None = None,
) -> Scripted:
    """A 200 chat completion asking for function calls: `(name, arguments)` pairs, arguments
    JSON-encoded unless a str. Each call gets a fresh id `call_<hex>`."""
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": f"call_{uuid.uuid4().hex[:12]}",
                            "type": "function",
                            "function": {
                                "name": name,
                                "arguments": arguments
                                if isinstance(arguments, str)
                                else json.dumps(arguments),
                            },
                        }
                        for name, arguments in calls
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if model is not None:
        body["model"] = model
    return Scripted(body=body)


class FakeOpenAI:
    def __init__(self, max_lifetime: float = 60.0) -> None:
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._deadline = threading.Timer(max_lifetime, self.stop)
        self._deadline.daemon = True
        self._stopped = False

    # --- Lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread.start()
        self._deadline.start()
        return self

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._deadline.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- Scripting --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def enqueue(self, *responses: Scripted) -> None:
        with self._lock:
            self._queue.extend(responses)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def _next(self, request: RecordedRequest) -> Scripted:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.popleft()
        return Scripted(status=500, body={"error": {"message": "no scripted response left"}})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                scripted = fake._next(
                    RecordedRequest(
                        method="POST",
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                    )
                )
                if scripted.delay:
                    time.sleep(scripted.delay)
                if isinstance(scripted.body, (dict, list)):
                    payload = json.dumps(scripted.body).encode()
                    content_type = "application/json"
                elif isinstance(scripted.body, str):
                    payload, content_type = scripted.body.encode(), "text/plain"
                elif isinstance(scripted.body, bytes):
                    payload, content_type = scripted.body, "application/octet-stream"
                else:
                    payload, content_type = b"", "text/plain"
                try:
                    self.send_response(scripted.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in scripted.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output quiet

        return Handler
