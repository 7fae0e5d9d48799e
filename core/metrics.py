"""Prometheus metrics of Podium's processes (`prometheus-client`), scraped at `/metrics`.

- The API serves `REGISTRY` at `GET /metrics`: cases started (`podium_cases_started_total`),
  decisions (`podium_decisions_total`), intake messages and spikes, HTTP requests.
- The worker serves `REGISTRY` (the model gateway's series per provider) merged with the Temporal
  runtime's own metrics (`worker_metrics_runtime`): the SDK's `temporal_*` series and what
  workflows and the worker record on Temporal's meter (`podium_approval_*`,
  `podium_cases_closed_total`, `podium_model_*`), on `PODIUM_WORKER_METRICS_PORT`.

The endpoints are unauthenticated, so no label value is personal: every value goes through
`label`, which keeps only short lowercase names (process, channel, outcome, provider, route) and
turns anything else, an email address or a customer id, into `other`.
"""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

__all__ = [
    "BREAKER_OPEN",
    "CACHE_INTAKE_WAITS",
    "CASES_LOADED",
    "CASES_PUSHED_OUT",
    "CASES_STARTED",
    "DECISIONS",
    "HTTP_REQUESTS",
    "INTAKE_MESSAGES",
    "INTAKE_SPIKES",
    "PROVIDER_CALLS",
    "PROVIDER_COST_USD",
    "PROVIDER_ERRORS",
    "PROVIDER_LATENCY",
    "REGISTRY",
    "RuntimeMetrics",
    "TemporalRuntimeCollector",
    "label",
    "status_class",
    "worker_metrics_runtime",
]

log = structlog.get_logger()

_LABEL_RE = re.compile(r"[a-z][a-z0-9_.-]{0,47}")
OTHER = "other"
NONE = "none"
# How long a scrape of the worker waits for the Temporal runtime's own exporter.
RUNTIME_SCRAPE_TIMEOUT_S = 2.0
# Approval waits run from minutes to days; model calls cost fractions of a cent.
APPROVAL_LATENCY_BUCKETS_S = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0)
MODEL_COST_BUCKETS_USD = (0.0, 0.0001, 0.001, 0.01, 0.1, 1.0)


def label(value: object) -> str:
    """A label value safe to publish: a short lowercase name, else `other` (`none` for None).
    Enum members give their value."""
    if value is None:
        return NONE
    text = str(getattr(value, "value", value))
    return text if _LABEL_RE.fullmatch(text) else OTHER


def status_class(status: int) -> str:
    """`2xx`, `4xx`, ...: per-status series would only multiply."""
    return f"{status // 100}xx" if 100 <= status < 600 else OTHER


REGISTRY = CollectorRegistry()

# --- the API (and any process that opens cases through PodiumClient) ------------------------
CASES_STARTED = Counter(
    "podium_cases_started",
    "Cases opened, by process and channel",
    ["process", "channel"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "podium_decisions",
    "Approval decisions recorded, by action",
    ["action"],
    registry=REGISTRY,
)
INTAKE_MESSAGES = Counter(
    "podium_intake_messages",
    "Messages received by the intake, by route (process or handoff)",
    ["route", "joined"],
    registry=REGISTRY,
)
INTAKE_SPIKES = Counter(
    "podium_intake_spikes",
    "Intake volume spikes (operations events)",
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "podium_http_requests",
    "HTTP requests answered by the API, by route template and status class",
    ["method", "route", "status"],
    registry=REGISTRY,
)

# --- the cases' worker's sticky cache (core/sticky_cache.py) ---------------------------------
CASES_LOADED = Counter(
    "podium_cases_loaded",
    "Cases instantiated in the cases' worker's cache: new, or replayed from their history",
    registry=REGISTRY,
)
CACHE_INTAKE_WAITS = Counter(
    "podium_cache_intake_waits",
    "Polls of the task queue held back because the full cache would push out a case in motion",
    registry=REGISTRY,
)
CASES_PUSHED_OUT = Counter(
    "podium_cases_pushed_out",
    "Cases pushed out of the full cache, by whether they waited on an activity",
    ["in_motion"],
    registry=REGISTRY,
)

# --- the worker's model gateway ----------------------------------------------------------
PROVIDER_CALLS = Counter(
    "podium_provider_calls",
    "Model calls by the gateway, by provider (model name in the models file), task, outcome",
    ["provider", "task", "outcome"],
    registry=REGISTRY,
)
PROVIDER_ERRORS = Counter(
    "podium_provider_errors",
    "Model calls that failed (failed, invalid_output, breaker_open), by provider",
    ["provider", "outcome"],
    registry=REGISTRY,
)
PROVIDER_LATENCY = Histogram(
    "podium_provider_latency_seconds",
    "Model call latency, by provider",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)
PROVIDER_COST_USD = Counter(
    "podium_provider_cost_usd",
    "Model spend, USD, by provider",
    ["provider"],
    registry=REGISTRY,
)
BREAKER_OPEN = Gauge(
    "podium_provider_breaker_open",
    "1 while a provider's circuit breaker is open (0.5 half-open), else 0",
    ["provider"],
    registry=REGISTRY,
)


class TemporalRuntimeCollector(Collector):
    """The Temporal runtime's Prometheus exporter, read on each scrape and re-exposed, so the
    worker has one `/metrics` for its own series and Temporal's."""

    def __init__(self, url: str, timeout: float = RUNTIME_SCRAPE_TIMEOUT_S) -> None:
        self._url = url
        self._timeout = timeout

    def describe(self) -> Iterable[Any]:
        return []  # nothing to check at registration: the families are Temporal's

    def collect(self) -> Iterator[Any]:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout) as response:
                text = response.read().decode("utf-8")
        except OSError as err:
            log.warning("temporal_metrics_unavailable", error=type(err).__name__)
            return
        yield from text_string_to_metric_families(text)


class _Forward(Collector):
    """Another registry's metrics, collected into this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self._registry.collect()


@dataclass
class RuntimeMetrics:
    """A worker's metrics endpoint: the Temporal runtime to connect with, and its server."""

    runtime: Runtime
    url: str
    server: WSGIServer
    thread: Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_metrics_runtime(host: str, port: int) -> RuntimeMetrics:
    """A Temporal runtime whose metrics, with `REGISTRY`'s, are served at
    `http://host:port/metrics`. Temporal's own exporter listens on a private loopback port.
    Raises OSError when `host:port` cannot be bound."""
    internal = _free_loopback_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"127.0.0.1:{internal}",
                counters_total_suffix=True,
                durations_as_seconds=True,
                histogram_bucket_overrides={
                    "podium_approval_latency_seconds": APPROVAL_LATENCY_BUCKETS_S,
                    "podium_model_cost_usd": MODEL_COST_BUCKETS_USD,
                },
            )
        )
    )
    served = CollectorRegistry(auto_describe=False)
    served.register(_Forward(REGISTRY))
    served.register(TemporalRuntimeCollector(f"http://127.0.0.1:{internal}/metrics"))
    server, thread = start_http_server(port, addr=host, registry=served)
    bound = server.server_address[1]
    return RuntimeMetrics(runtime, f"http://{host}:{bound}/metrics", server, thread)
