"""Tracing through OpenTelemetry, off unless the standard `OTEL_*` variables ask for it.

`OTEL_TRACES_EXPORTER=otlp` (with `OTEL_EXPORTER_OTLP_ENDPOINT`, say
`http://collector:4318`, OTLP over HTTP) or `console` turns it on; unset or `none`, nothing is
traced and nothing is imported. `OTEL_SERVICE_NAME` names the process (default `podium-<role>`:
`podium-api`, `podium-worker`, `podium-cli`). When on, every Podium client carries Temporal's
`TracingInterceptor` (`temporalio.contrib.opentelemetry`): the API's start of a case, its
decisions, and the worker's workflow and activity runs become one trace per case (spans such as
`StartWorkflow:refund`, `RunWorkflow:refund`, `StartActivity:issue_refund`,
`RunActivity:issue_refund`), the context carried in Temporal headers (which the codec encrypts
like every header). Spans carry Temporal's ids, never a payload.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TRACING_PASSTHROUGH", "tracing_enabled", "tracing_interceptors"]

# The sandbox passes OpenTelemetry through, as `temporalio.contrib.opentelemetry` requires.
TRACING_PASSTHROUGH = ("opentelemetry",)

_configured: dict[str, Any] = {}


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    return exporter not in ("", "none")


def tracing_interceptors(role: str, environ: Mapping[str, str] | None = None) -> list[Any]:
    """`[TracingInterceptor()]` with this process's tracer provider set up once from `OTEL_*`,
    or `[]` when tracing is off. Raises ValueError for an exporter it does not know."""
    env = os.environ if environ is None else environ
    if not tracing_enabled(env):
        return []
    from opentelemetry import trace
    from temporalio.contrib.opentelemetry import TracingInterceptor

    if "provider" not in _configured:
        _configured["provider"] = _provider(role, env)
        trace.set_tracer_provider(_configured["provider"])
    return [TracingInterceptor()]


def _provider(role: str, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    names = [n.strip().lower() for n in env["OTEL_TRACES_EXPORTER"].split(",") if n.strip()]
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())  # OTEL_EXPORTER_OTLP_* configure it
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        else:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER={name!r}: Podium exports traces by 'otlp' (HTTP) or "
                "'console', or 'none'"
            )
    service = env.get("OTEL_SERVICE_NAME") or f"podium-{role}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
