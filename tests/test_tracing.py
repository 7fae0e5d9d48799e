"""Tracing: off unless `OTEL_TRACES_EXPORTER` asks for it; when on, one trace per case.

The trace test runs a refund case on the time-skipping server through a client that carries
Temporal's `TracingInterceptor` (as `core.temporal.connect` installs it when tracing is on),
with the real systems-of-record activities, the production sandbox (OpenTelemetry passed
through) and an in-memory span exporter instead of a collector.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.engine import Engine
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

from core.tracing import tracing_enabled, tracing_interceptors
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
)
from workflows.refund.types import RefundCaseInput, RefundCaseResult, RefundOutcome


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = seeded_engine(tmp_path)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("environ", [{}, {"OTEL_TRACES_EXPORTER": "none"}])
def test_tracing_is_off_by_default(environ: dict[str, str]) -> None:
    assert not tracing_enabled(environ)
    assert [] == tracing_interceptors("worker", environ)


def test_an_unknown_exporter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="'otlp'"):
        tracing_interceptors("worker", {"OTEL_TRACES_EXPORTER": "zipkin"})


async def test_a_case_is_one_trace_from_its_start_to_its_activities(
    time_env: WorkflowEnvironment, engine: Engine
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("podium-test")
    config = time_env.client.config()
    traced = Client(
        **{**config, "interceptors": [*config["interceptors"], TracingInterceptor(tracer)]}
    )
    activities = [*real_system_activities(engine), fake_triage, fake_draft]
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with make_worker(traced, activities, executor) as worker:
            handle = await traced.start_workflow(
                "refund",
                RefundCaseInput(
                    channel="email",
                    customer_id="C-1001",
                    order_id="O-5001",
                    message="refund O-5001 please",
                ),
                id=f"refund-trace-{uuid.uuid4().hex}",
                task_queue=worker.task_queue,
                result_type=RefundCaseResult,
            )
            result = await handle.result()
    provider.force_flush()
    assert RefundOutcome.AUTO_RESOLVED == result.outcome
    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    for expected in (
        "StartWorkflow:refund",
        "RunWorkflow:refund",
        "StartActivity:issue_refund",
        "RunActivity:issue_refund",
    ):
        assert expected in names, sorted(names)
    assert 1 == len({span.context.trace_id for span in finished})  # one trace for the case
    attributes = " ".join(str(dict(span.attributes or {})) for span in finished)
    assert "C-1001" not in attributes and "refund O-5001 please" not in attributes
