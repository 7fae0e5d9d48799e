"""Prometheus metrics: the worker's and the API's `/metrics`, scraped around a case's life.

1. Label hygiene: `core.metrics.label` publishes names only, never an email or a customer id.
2. End to end on the dev server: a worker whose Temporal runtime exports Prometheus
   (`core.metrics.worker_metrics_runtime`, a free loopback port) and the API (uvicorn); a refund
   over the limit is opened through the API and approved; both endpoints are scraped before and
   after, and the named series exist and have grown once the case closed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.intelligence import EmbeddedModels
from core.admission import AdmissionInterceptor
from core.metrics import OTHER, label, status_class, worker_metrics_runtime
from core.settings import Settings
from starter.api import create_app
from tests.auth_helpers import TEST_JWT_SECRET, AsCaller
from tests.helpers import seeded_engine
from tests.podium_stack import free_port
from worker import build_activities, build_worker

Labels = dict[str, str]


def test_label_keeps_names_and_drops_anything_personal() -> None:
    assert "refund" == label("refund")
    assert "email" == label("email")
    assert "openai-mini" == label("openai-mini")
    assert "none" == label(None)
    for personal in ("lead@example.com", "C-1002", "email:C-1002", "Jane Doe", "x" * 60, ""):
        assert OTHER == label(personal), personal
    assert "2xx" == status_class(201)
    assert "5xx" == status_class(503)


def total(text: str, name: str, match: Callable[[Labels], bool] = lambda _: True) -> float:
    """The sum of the samples named `name` (`..._total`, `..._count`) whose labels match."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and match(sample.labels)
    )


def has(text: str, name: str) -> bool:
    return any(
        sample.name == name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


@dataclass
class Endpoints:
    api: str
    worker_metrics: str


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Endpoints]:
    port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"metrics-{uuid.uuid4().hex}",
        data_dir=tmp_path,
        api_port=port,
        jwt_secret=TEST_JWT_SECRET,
    )
    engine = seeded_engine(tmp_path)
    served = worker_metrics_runtime("127.0.0.1", 0)
    worker_client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        runtime=served.runtime,
        data_converter=pydantic_data_converter,
        interceptors=[AdmissionInterceptor()],
    )

    async def factory(_: Settings) -> Client:
        return dev_env.client

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, factory), host="127.0.0.1", port=port, log_level="error"
        )
    )
    try:
        with ThreadPoolExecutor(max_workers=settings.activity_threads) as executor:
            worker = build_worker(
                worker_client,
                settings,
                activities=build_activities(engine, EmbeddedModels.load()),
                executor=executor,
            )
            async with worker:
                serving = asyncio.create_task(server.serve())
                while not server.started:
                    await asyncio.sleep(0.05)
                try:
                    yield Endpoints(f"http://127.0.0.1:{port}", served.url)
                finally:
                    server.should_exit = True
                    await serving
    finally:
        served.close()
        engine.dispose()


def refund_closed(labels: Labels) -> bool:
    return (
        "refund" == labels.get("process")
        and "approved" == labels.get("outcome")
        and "email" == labels.get("channel")
        and "false" == labels.get("automated")
    )


@pytest.mark.e2e
async def test_metrics_move_when_a_case_opens_and_closes(stack: Endpoints) -> None:
    async with httpx.AsyncClient(timeout=30) as scraper:
        api_before = (await scraper.get(f"{stack.api}/metrics")).text
        worker_before = (await scraper.get(stack.worker_metrics)).text

        async with httpx.AsyncClient(base_url=stack.api, timeout=60, auth=AsCaller()) as http:
            created = await http.post(
                "/cases/refund",
                json={
                    "channel": "email",
                    "customer_id": "C-1002",
                    "order_id": "O-5003",
                    "message": "Hello, my order O-5003 arrived broken. I want a refund please.",
                },
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert 201 == created.status_code, created.text
            case_id = created.json()["case_id"]
            for _ in range(200):
                view = (await http.get(f"/cases/{case_id}")).json()
                if view.get("state", {}).get("status") == "awaiting_approval":
                    break
                await asyncio.sleep(0.1)
            decided = await http.post(
                f"/cases/{case_id}/approve",
                json={"approver": "lead@example.com", "roles": ["team_lead"]},
            )
            assert 200 == decided.status_code, decided.text
            assert "approved" == decided.json()["outcome"]

        # The API: public, Prometheus text, and nothing personal in it.
        api = await scraper.get(f"{stack.api}/metrics")
        assert 200 == api.status_code
        assert api.headers["content-type"].startswith("text/plain")
        for name, match in [
            (
                "podium_cases_started_total",
                lambda labels: labels == {"process": "refund", "channel": "email"},
            ),
            ("podium_decisions_total", lambda labels: labels == {"action": "approve"}),
            (
                "podium_http_requests_total",
                lambda labels: (
                    labels.get("route") == "/cases/{case_id}/approve"
                    and labels.get("status") == "2xx"
                ),
            ),
        ]:
            assert total(api_before, name, match) + 1 <= total(api.text, name, match), name
        assert has(api.text, "podium_intake_spikes_total")
        for secret in ("@", case_id, "C-1002", "O-5003"):
            assert secret not in api.text

        # The worker: its own series and the Temporal runtime's, once the case has closed.
        worker = ""
        for _ in range(100):
            worker = (await scraper.get(stack.worker_metrics)).text
            if total(worker, "podium_cases_closed_total", refund_closed) > total(
                worker_before, "podium_cases_closed_total", refund_closed
            ):
                break
            await asyncio.sleep(0.1)
        assert total(worker_before, "podium_cases_closed_total", refund_closed) + 1 == total(
            worker, "podium_cases_closed_total", refund_closed
        )
        for name in (
            "podium_approval_latency_seconds_count",
            "podium_provider_calls_total",
            "podium_provider_latency_seconds_count",
        ):
            assert total(worker_before, name) < total(worker, name), name
        assert has(worker, "podium_provider_cost_usd_total")
        assert any(
            family.name.startswith("temporal_") for family in text_string_to_metric_families(worker)
        )
        for secret in ("@", case_id, "C-1002", "O-5003"):
            assert secret not in worker
