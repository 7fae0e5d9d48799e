"""The approvers' web page (/inbox) in a real browser against the real stack.

Debian's Chromium (`/usr/bin/chromium`), driven by Playwright (never `playwright install`), loads
the page served by the API on a loopback port; the API talks to the dev server, where a worker
runs the real refund workflow with real activities. Cases wait; the page lists them for
`team_lead` in SLA order; one is opened (recommendation, confidence, reasons) and approved, and
the case ends approved. Another carries markup in what the requester and the customer typed:
it shows as text and never runs; a lower amount is then approved for it, which sends it on to
finance. A third, which Podium recommends rejecting, is rejected with a reason. Screenshots go
to the test's tmp dir.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from activities.intelligence import EmbeddedModels
from core.db import Order, utcnow
from tests.approvals_stack import ApprovalsStack, approvals_stack, eventually
from tests.auth_helpers import AsCaller, token

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APPROVER = "lead@example.com"
OLD_ORDER = "O-5900"
MARKUP_REQUESTER = '<img src=x onerror="window.__xss=1">'
MARKUP_MESSAGE = (
    "<script>window.__xss=2</script> My order O-5007 arrived broken. "
    "I want a refund please. <b>thanks</b>"
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium; "
        ".ci/run installs it when it can)",
    ),
]

async_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package")


@pytest.fixture(scope="module")
def models() -> EmbeddedModels:
    return EmbeddedModels.load()


@pytest.fixture
async def stack(dev_env: Any, tmp_path: Path, models: EmbeddedModels) -> AsyncIterator[Any]:
    async with approvals_stack(dev_env, tmp_path, models) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with async_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def seed_order_outside_the_window(stack: ApprovalsStack) -> None:
    """An order delivered on time 45 days ago: not eligible, so Podium recommends rejecting."""
    day = timedelta(days=1)
    now = utcnow()
    with Session(stack.engine) as session:
        session.add(
            Order(
                id=OLD_ORDER,
                customer_id="C-1003",
                amount_cents=15_000,
                status="delivered",
                ordered_at=now - 50 * day,
                promised_by=now - 44 * day,
                shipped_at=now - 48 * day,
                delivered_at=now - 45 * day,
            )
        )
        session.commit()


async def open_case(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    response = await http.post(
        "/cases/refund", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert 201 == response.status_code, response.text
    case_id: str = response.json()["case_id"]
    return case_id


@pytest.mark.timeout(120)
async def test_team_lead_opens_and_approves_a_case_in_the_browser(
    stack: ApprovalsStack, browser: Any, tmp_path: Path
) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, auth=AsCaller()) as http:
        plain = await open_case(
            http,
            {
                "channel": "email",
                "customer_id": "C-1002",
                "order_id": "O-5003",
                "message": "Hello, my order O-5003 arrived broken. I want a refund please.",
            },
        )
        marked = await open_case(
            http,
            {
                "channel": "chat",
                "customer_id": "C-1004",
                "order_id": "O-5007",
                "message": MARKUP_MESSAGE,
                "requested_by": MARKUP_REQUESTER,
            },
        )
        seed_order_outside_the_window(stack)
        late = await open_case(
            http,
            {
                "channel": "email",
                "customer_id": "C-1003",
                "order_id": OLD_ORDER,
                "message": f"My order {OLD_ORDER} stopped working. I want a refund please.",
            },
        )
        stack.started += [plain, marked, late]
        listed = await eventually(
            lambda: http.get("/approvals", params={"role": "team_lead"}),
            lambda r: {plain, marked, late} <= {i["case_id"] for i in r.json()["items"]},
            timeout=30,
        )
        # Both are due 48 h after their gate opened: whichever opened first is due first.
        due = {i["case_id"]: i["sla_due_at"] for i in listed.json()["items"]}
        in_sla_order = sorted([plain, marked], key=lambda case_id: due[case_id])

        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        problems: list[str] = []
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )
        # Signed in: the approver's token, as the Token field keeps it (this tab only).
        await page.add_init_script(
            f"window.sessionStorage.setItem('podium.token', '{token(APPROVER, ['team_lead'])}')"
        )
        response = await page.goto(f"{stack.base_url}/inbox?role=team_lead&approver={APPROVER}")
        assert response is not None and 200 == response.status
        assert "script-src 'self'" in response.headers["content-security-policy"]
        expect = async_api.expect

        # The list: both cases, in SLA order, with the time left.
        rows = page.locator("#items tr")
        await expect(page.locator(f'#items tr[data-case-id="{plain}"]')).to_be_visible()
        await expect(page.locator(f'#items tr[data-case-id="{marked}"]')).to_be_visible()
        shown = await rows.evaluate_all("rows => rows.map(row => row.dataset.caseId)")
        assert in_sla_order == [case_id for case_id in shown if case_id in {plain, marked}]
        plain_row = page.locator(f'#items tr[data-case-id="{plain}"]')
        await expect(plain_row.locator("td.left")).to_contain_text("1d 23h")
        await expect(plain_row).to_contain_text("$349.00")
        assert "team_lead" == await page.locator("#role").input_value()
        assert APPROVER == await page.locator("#approver").input_value()

        # Open one: what Podium recommends, how sure it is, why.
        await plain_row.get_by_role("button", name=plain).click()
        await expect(page.locator("#detail-title")).to_have_text(f"Case {plain}")
        recommendation = page.locator("#recommendation")
        await expect(recommendation).to_contain_text("approve")
        await expect(recommendation).to_contain_text("medium risk")
        await expect(recommendation).to_contain_text("intent refund_request (confidence")
        await expect(page.locator("#reasons")).to_contain_text("over the automatic limit")
        await expect(page.locator("#facts")).to_contain_text("1/1 team_lead")
        await expect(page.locator("#message")).to_contain_text("arrived broken")
        await expect(page.locator("#decisions")).to_contain_text("none yet")

        # A rejection needs a reason: the page says so and sends nothing.
        await page.locator("#reject").click()
        await expect(page.locator("#decide-status")).to_contain_text("needs a reason")

        # Approve: the case ends approved.
        await page.locator("#comment").fill("photos look right")
        await page.locator("#approve").click()
        status = page.locator("#decide-status")
        await expect(status).to_contain_text("outcome approved", timeout=60_000)
        await expect(status).to_contain_text("refund R-")
        await expect(page.locator("#decisions")).to_contain_text(
            f"approve by {APPROVER} (team_lead) — photos look right"
        )
        await expect(page.locator("#decide")).to_be_hidden()
        # `decide` answers once the refund is issued; the reply follows, then the case ends.
        ended = await eventually(
            lambda: http.get(f"/cases/{plain}"),
            lambda r: r.json()["workflow_status"] != "running",
        )
        final = ended.json()
        assert ("completed", "approved") == (final["workflow_status"], final["outcome"])
        assert APPROVER == final["state"]["decision"]["approver"]
        await page.screenshot(path=str(tmp_path / "inbox-approved.png"), full_page=True)

        # The other case: what people typed is text, never markup; nothing of it runs.
        await page.reload()
        await (
            page.locator(f'#items tr[data-case-id="{marked}"]')
            .get_by_role("button", name=marked)
            .click()
        )
        await expect(page.locator("#detail-title")).to_have_text(f"Case {marked}")
        await expect(page.locator("#facts")).to_contain_text(MARKUP_REQUESTER)
        assert MARKUP_MESSAGE == await page.locator("#message").text_content()
        assert 0 == await page.locator("#detail img, #detail script, #detail b").count()
        assert await page.evaluate("window.__xss") is None

        # Request changes: a lower amount, approved at team_lead; finance decides next.
        await page.locator("#new-amount").fill("20")
        await page.locator("#changes-reason").fill("half was used")
        await page.locator("#request-changes").click()
        await expect(page.locator("#decide-status")).to_contain_text(
            "now waiting for finance", timeout=60_000
        )
        await expect(page.locator("#facts")).to_contain_text("$20.00")
        # Finance decides now: the team lead's buttons say so instead of inviting a refusal.
        await expect(page.locator("#decide-note")).to_contain_text("Waiting for finance")
        await expect(page.locator("#approve")).to_be_disabled()
        await page.screenshot(path=str(tmp_path / "inbox-request-changes.png"), full_page=True)
        view = (await http.get(f"/approvals/{marked}")).json()
        assert (2, 2_000) == (view["request"]["level"], view["request"]["amount_cents"])

        # Delivered on time, long ago: Podium recommends rejecting; the team lead rejects.
        await page.reload()
        await (
            page.locator(f'#items tr[data-case-id="{late}"]')
            .get_by_role("button", name=late)
            .click()
        )
        await expect(page.locator("#detail-title")).to_have_text(f"Case {late}")
        await expect(page.locator("#recommendation")).to_contain_text("reject")
        await expect(page.locator("#reasons")).to_contain_text("outside the 30-day return window")
        await page.locator("#reject-reason").fill("outside the return window")
        await page.locator("#reject").click()
        await expect(page.locator("#decide-status")).to_contain_text(
            "outcome rejected", timeout=60_000
        )
        await expect(page.locator("#decisions")).to_contain_text("— outside the return window")

        assert [] == problems
    for name in ("inbox-approved.png", "inbox-request-changes.png"):
        assert (tmp_path / name).stat().st_size > 10_000
