"""The verification-code route's refusals, against the real dev server: who may call it, what
a case that takes no code answers, what a body may hold. (Entering codes into real cases:
`test_password_reset_e2e.py`.)"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from starter.api import create_app
from tests.auth_helpers import TEST_JWT_SECRET, bearer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

API_KEY = "pk_portal-test-key-not-for-production"


@pytest.fixture
async def http(dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        task_queue=f"test-{uuid.uuid4()}",  # no worker: cases just wait
        jwt_secret=TEST_JWT_SECRET,
        api_keys=SecretStr(f"portal:{API_KEY}:service"),
    )

    async def factory(_: Settings) -> Client:
        return dev_env.client

    app = create_app(settings, factory)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://podium.test"
        ) as client,
    ):
        yield client


def problem_type(response: httpx.Response) -> str:
    assert "application/problem+json" == response.headers["content-type"], response.text
    return str(response.json()["type"]).removeprefix("urn:podium:problem:")


async def test_who_and_what_the_route_refuses(
    http: httpx.AsyncClient, dev_env: WorkflowEnvironment
) -> None:
    path = "/cases/password_reset-nope/verification-code"
    body = {"code": "123456"}
    assert 401 == (await http.post(path, json=body)).status_code
    # A service's key is no employee, whatever case it names.
    service = await http.post(path, json=body, headers={"X-API-Key": API_KEY})
    assert (403, "forbidden") == (service.status_code, problem_type(service))
    missing = await http.post(path, json=body, headers=bearer("ana.lima"))
    assert (404, "case-not-found") == (missing.status_code, problem_type(missing))
    for wrong in ({"code": "12345"}, {"code": "123456", "user_name": "ana.lima"}, {}):
        refused = await http.post(path, json=wrong, headers=bearer("ana.lima"))
        assert (422, "validation") == (refused.status_code, problem_type(refused)), wrong

    # A refund case takes no code: nothing is stored, the answer says why.
    opened = await http.post(
        "/cases/refund",
        json={"customer_id": "C-1002", "message": "Refund please", "channel": "web"},
        headers={"X-API-Key": API_KEY},
    )
    assert 201 == opened.status_code, opened.text
    case_id = opened.json()["case_id"]
    refund = await http.post(
        f"/cases/{case_id}/verification-code", json=body, headers=bearer("ana.lima")
    )
    assert (409, "code-not-awaited") == (refund.status_code, problem_type(refund))
    assert "takes no verification code" in refund.json()["detail"]
    await dev_env.client.get_workflow_handle(case_id).terminate("test finished")


async def test_the_route_is_documented_with_its_answers(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    route = spec["paths"]["/cases/{case_id}/verification-code"]["post"]
    assert {"200", "401", "403", "404", "409", "422", "429", "503"} <= set(route["responses"])
    schema = spec["components"]["schemas"]["VerificationCodeBody"]
    assert (["code"], False) == (schema["required"], schema["additionalProperties"])
