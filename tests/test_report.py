"""The operations report (`core/report.py`, `podium report`, `GET /reports`): every KPI checked
against outcome rows seeded in a temporary SQLite database, by numbers computed by hand; the
baseline file refused when wrong; the API's page behind a credential, with its charts; and a
screenshot of the page in Chromium (Playwright with Debian's /usr/bin/chromium, skipped without
them; never `playwright install`).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from typer.testing import CliRunner

from core.db import CaseOutcome, create_tables, make_engine
from core.policy import PolicyError
from core.report import build_report, load_baseline, parse_since, percentile, read_outcomes
from core.settings import Settings
from starter.api import create_app
from starter.cli import create_cli
from tests.auth_helpers import TEST_JWT_SECRET, bearer
from tests.podium_stack import free_port

NOW = datetime.now(UTC).replace(microsecond=0)

BASELINE = """\
version: test-roi-1
currency: EUR
person_minute_cost: 0.5
processes:
  refund:
    manual_minutes: 10
    review_minutes: 4
  password_reset:
    manual_minutes: 8
    manual_cost: 6
    review_minutes: 2
"""


def outcome(
    case_id: str,
    process: str,
    channel: str | None,
    *,
    automated: bool,
    sla_met: bool | None = None,
    minutes: float,
    cost: float = 0.0,
    days_ago: float = 2,
) -> CaseOutcome:
    closed = NOW - timedelta(days=days_ago)
    return CaseOutcome(
        case_id=case_id,
        run_id="run-" + case_id,
        process=process,
        channel=channel,
        outcome="done",
        automated=automated,
        people=[] if automated else ["alice@example.com"],
        sla_met=sla_met,
        started_at=closed - timedelta(minutes=minutes),
        closed_at=closed,
        resolution_s=minutes * 60,
        model_cost_usd=cost,
        policy_version="v1",
    )


def seeded_rows() -> list[CaseOutcome]:
    """Eight cases in the last week, and one closed 10 days ago (outside `--since 7d`)."""
    return [
        # refund: 4 cases, 2 automated, 2 a person was asked on (one within the SLA, one not)
        outcome("r1", "refund", "chat", automated=True, minutes=1, cost=0.02),
        outcome("r2", "refund", "email", automated=True, minutes=2, cost=0.04),
        outcome("r3", "refund", "chat", automated=False, sla_met=True, minutes=60, cost=0.06),
        outcome("r4", "refund", "chat", automated=False, sla_met=False, minutes=3000, cost=0.08),
        # password_reset: 3 cases, all automated, no model cost
        outcome("p1", "password_reset", "portal", automated=True, minutes=5),
        outcome("p2", "password_reset", "portal", automated=True, minutes=10),
        outcome("p3", "password_reset", None, automated=True, minutes=15),
        # handoff: 1 case, a person answered with no approval SLA; no baseline for it
        outcome("h1", "handoff", "chat", automated=False, sla_met=None, minutes=30, cost=0.01),
        # outside the window
        outcome("old", "refund", "chat", automated=False, sla_met=False, minutes=9999, days_ago=10),
    ]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path / 'podium.db'}"
    engine = make_engine(url)
    create_tables(engine)
    with Session(engine) as session:
        session.add_all(seeded_rows())
        session.commit()
    yield url, engine
    engine.dispose()


@pytest.fixture
def baseline_file(tmp_path: Path) -> Path:
    path = tmp_path / "roi.yaml"
    path.write_text(BASELINE)
    return path


def week_report(engine: Engine, baseline_file: Path, process: str | None = None) -> dict:
    since = NOW - timedelta(days=7)
    rows = read_outcomes(engine, since, NOW, process)
    report = build_report(rows, load_baseline(baseline_file), since=since, until=NOW)
    return report.model_dump(mode="json")


def test_percentiles_are_nearest_rank() -> None:
    assert None is percentile([], 50)
    assert 2 == percentile([3, 1, 2, 4], 50)
    assert 4 == percentile([3, 1, 2, 4], 95)
    assert 19 == percentile(list(range(1, 21)), 95)
    assert 1 == percentile([1], 95)


def test_since_reads_minutes_hours_days_weeks() -> None:
    assert timedelta(days=7) == parse_since("7d")
    assert timedelta(hours=24) == parse_since("24h")
    assert timedelta(weeks=2) == parse_since("2w")
    assert timedelta(minutes=90) == parse_since("90m")
    for wrong in ("", "7", "d", "-1d", "0d", "7y", "nand"):
        with pytest.raises(ValueError):
            parse_since(wrong)


def test_every_kpi_matches_the_outcome_rows(
    database: tuple[str, Engine], baseline_file: Path
) -> None:
    _, engine = database
    report = week_report(engine, baseline_file)
    overall = report["overall"]
    # 8 cases in the window ("old" is not): 5 automated, 3 a person was asked on.
    assert 8 == overall["cases"]
    assert 5 / 8 == overall["containment_rate"]
    # Escalated: r4 of r3, r4, h1.
    assert 1 == overall["escalated"]
    assert 1 / 3 == overall["escalation_rate"]
    # SLA attainment over the cases with an SLA (r3, r4; h1 had none).
    assert 1 / 2 == overall["sla_attainment"]
    # Resolution minutes sorted: 1 2 5 10 15 30 60 3000 -> p50 rank 4 (10), p95 rank 8 (3000).
    assert 10 * 60 == overall["resolution_p50_s"]
    assert 3000 * 60 == overall["resolution_p95_s"]
    # Cost: models 0.02+0.04+0.06+0.08+0.01 = 0.21; people: r3, r4 review 4 min each (h1's
    # process has no baseline: no minutes) = 8 min x 0.5 = 4.00; 4.21 / 8 cases.
    assert pytest.approx(0.21) == overall["model_cost"]
    assert 8 == overall["person_minutes"]
    assert pytest.approx(4.21 / 8) == overall["cost_per_case"]

    by_process = {group["name"]: group for group in report["by_process"]}
    assert ["handoff", "password_reset", "refund"] == list(by_process)
    refund = by_process["refund"]
    assert (4, 2, 2) == (refund["cases"], refund["automated"], refund["person_asked"])
    assert 0.5 == refund["containment_rate"]
    assert 0.5 == refund["escalation_rate"]
    assert 0.5 == refund["sla_attainment"]
    # 1 2 60 3000 -> p50 rank 2 (2 min), p95 rank 4 (3000 min)
    assert 2 * 60 == refund["resolution_p50_s"]
    assert 3000 * 60 == refund["resolution_p95_s"]
    # (0.20 model + 8 min x 0.5) / 4 = 1.05
    assert pytest.approx(1.05) == refund["cost_per_case"]
    reset = by_process["password_reset"]
    assert 1.0 == reset["containment_rate"]
    assert None is reset["escalation_rate"]
    assert None is reset["sla_attainment"]
    assert 10 * 60 == reset["resolution_p50_s"]
    assert 0 == reset["cost_per_case"]
    handoff = by_process["handoff"]
    assert 0.0 == handoff["containment_rate"]
    assert 0.0 == handoff["escalation_rate"]
    assert None is handoff["sla_attainment"]
    assert pytest.approx(0.01) == handoff["cost_per_case"]

    by_channel = {group["name"]: group for group in report["by_channel"]}
    assert ["chat", "email", "none", "portal"] == list(by_channel)
    assert (4, 1 / 4) == (by_channel["chat"]["cases"], by_channel["chat"]["containment_rate"])
    assert 1 / 2 == by_channel["chat"]["sla_attainment"]
    assert 2 == by_channel["portal"]["cases"]
    assert 1 == by_channel["none"]["cases"]


def test_roi_compares_the_baseline_with_the_measured_cost(
    database: tuple[str, Engine], baseline_file: Path
) -> None:
    _, engine = database
    roi = week_report(engine, baseline_file)["roi"]
    assert ("EUR", "test-roi-1") == (roi["currency"], roi["baseline_version"])
    lines = {line["process"]: line for line in roi["lines"]}
    assert ["password_reset", "refund"] == list(lines)
    refund = lines["refund"]
    # 4 cases in 7 days -> 4 x 30 / 7 a month; manual 10 min x 0.5 = 5.00; Podium 1.05.
    assert pytest.approx(4 * 30 / 7) == refund["cases_per_month"]
    assert (10, 2) == (refund["manual_minutes_per_case"], refund["podium_minutes_per_case"])
    assert 5.0 == refund["manual_cost_per_case"]
    assert pytest.approx(1.05) == refund["podium_cost_per_case"]
    assert pytest.approx(3.95) == refund["savings_per_case"]
    assert pytest.approx(3.95 * 4 * 30 / 7) == refund["savings_per_month"]
    reset = lines["password_reset"]
    # manual_cost given (6), no person asked, no model cost: 6 saved on each of 3 x 30 / 7.
    assert 6.0 == reset["manual_cost_per_case"]
    assert pytest.approx(6 * 3 * 30 / 7) == reset["savings_per_month"]
    assert pytest.approx((3.95 * 4 + 6 * 3) * 30 / 7) == roi["savings_per_month"]
    assert ["handoff"] == roi["without_baseline"]
    assumptions = "\n".join(roi["assumptions"])
    for stated in (
        "test-roi-1",
        "0.50 EUR",
        "x 30 / 7 days",
        "refund: manual 10 min, 5.00 EUR per case",
        "review on Podium 4 min",
        "no baseline, no ROI: handoff",
    ):
        assert stated in assumptions


def test_a_process_filter_and_an_empty_window(
    database: tuple[str, Engine], baseline_file: Path, tmp_path: Path
) -> None:
    _, engine = database
    report = week_report(engine, baseline_file, process="password_reset")
    assert 3 == report["overall"]["cases"]
    assert ["password_reset"] == [group["name"] for group in report["by_process"]]
    # A database no worker has written outcomes to yet: an empty report, not an error.
    empty = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        report = week_report(empty, baseline_file)
    finally:
        empty.dispose()
    assert 0 == report["overall"]["cases"]
    assert None is report["overall"]["containment_rate"]
    assert None is report["overall"]["cost_per_case"]
    assert [] == report["roi"]["lines"]
    assert 0 == report["roi"]["savings_per_month"]


def test_the_baseline_file_refuses_unknown_and_wrong_fields(tmp_path: Path) -> None:
    path = tmp_path / "roi.yaml"
    path.write_text(BASELINE.replace("review_minutes: 2", "review_minute: 2"))
    with pytest.raises(PolicyError) as caught:
        load_baseline(path)
    text = "\n".join(caught.value.errors)
    assert "processes.password_reset.review_minute: unknown field" in text
    assert "processes.password_reset.review_minutes: Field required" in text
    path.write_text(BASELINE.replace("person_minute_cost: 0.5", "person_minute_cost: -1"))
    with pytest.raises(PolicyError, match="person_minute_cost"):
        load_baseline(path)
    # The repository's own baseline loads and names every registered process.
    from workflows.registry import PROCESSES

    assert set(PROCESSES.names) == set(load_baseline().processes)


def test_the_cli_prints_tables_and_json(database: tuple[str, Engine], baseline_file: Path) -> None:
    url, _ = database
    runner = CliRunner()
    cli = create_cli()
    args = ["report", "--since", "7d", "--baseline", str(baseline_file), "--database-url", url]
    result = runner.invoke(cli, [*args, "--json"])
    assert 0 == result.exit_code, result.output
    data = json.loads(result.stdout)
    assert 8 == data["overall"]["cases"]
    assert 5 / 8 == data["overall"]["containment_rate"]
    assert pytest.approx((3.95 * 4 + 6 * 3) * 30 / 7) == data["roi"]["savings_per_month"]

    result = runner.invoke(cli, args)
    assert 0 == result.exit_code, result.output
    text = result.stdout
    assert "): 8" in text.splitlines()[0]
    refund = next(line for line in text.splitlines() if line.startswith("refund "))
    # N, contained, escalated, SLA met, p50, p95, cost per case
    assert ["4", "50.0%", "50.0%", "50.0%", "2m", "00s", "2d", "2h", "1.05", "EUR"] == (
        refund.split()[1:]
    )
    assert f"Savings per month: {(3.95 * 4 + 6 * 3) * 30 / 7:,.2f} EUR" in text
    assert "a person's minute costs 0.50 EUR" in text

    result = runner.invoke(cli, [*args, "--process", "refund", "--json"])
    assert 4 == json.loads(result.stdout)["overall"]["cases"]
    result = runner.invoke(cli, [*args, "--since", "1d", "--json"])
    # Every seeded case closed two days ago or more.
    assert 0 == json.loads(result.stdout)["overall"]["cases"]


def test_the_cli_refuses_a_bad_baseline_a_bad_window_and_a_missing_database(
    database: tuple[str, Engine], baseline_file: Path, tmp_path: Path
) -> None:
    url, _ = database
    runner = CliRunner()
    cli = create_cli()
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: x\nperson_minute_cost: 1\nextra: 1\n")
    result = runner.invoke(cli, ["report", "--baseline", str(bad), "--database-url", url])
    assert 1 == result.exit_code
    assert "extra: unknown field" in result.stderr
    result = runner.invoke(cli, ["report", "--since", "week", "--database-url", url])
    assert 2 == result.exit_code
    assert "not a duration" in result.stderr
    missing = f"sqlite:///{tmp_path / 'nowhere.db'}"
    result = runner.invoke(cli, ["report", "--database-url", missing])
    assert 2 == result.exit_code
    assert "no database at" in result.stderr


# --- the API: GET /reports.json and the page ----------------------------------------------------


def api_settings(url: str, baseline_file: Path) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=url,
        policies_dir=baseline_file.parent,
        jwt_secret=TEST_JWT_SECRET,
        task_queue=f"report-{uuid.uuid4().hex}",
    )


async def unreachable(_: Settings) -> Client:
    # The report needs no Temporal: nothing listens on port 1 (lazy, as the API's own client).
    return await Client.connect("127.0.0.1:1", lazy=True, data_converter=pydantic_data_converter)


@asynccontextmanager
async def report_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, unreachable)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        yield http


async def test_the_api_serves_the_report_to_readers_only(
    database: tuple[str, Engine], baseline_file: Path
) -> None:
    url, _ = database
    async with report_api(api_settings(url, baseline_file)) as http:
        for path in ("/reports", "/reports.json"):
            refused = await http.get(path)
            assert 401 == refused.status_code
            assert "application/problem+json" == refused.headers["content-type"]
        reader = bearer("agent@example.com", ["agent"])
        answer = await http.get("/reports.json?since=7d", headers=reader)
        assert 200 == answer.status_code, answer.text
        data = answer.json()
        assert 8 == data["overall"]["cases"]
        assert 5 / 8 == data["overall"]["containment_rate"]
        assert pytest.approx((3.95 * 4 + 6 * 3) * 30 / 7) == data["roi"]["savings_per_month"]
        answer = await http.get("/reports.json?since=7d&process=refund", headers=reader)
        assert 4 == answer.json()["overall"]["cases"]
        assert 422 == (await http.get("/reports.json?since=forever", headers=reader)).status_code

        page = await http.get("/reports?since=7d", headers=reader)
        assert 200 == page.status_code
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src" not in page.headers["content-security-policy"]
        html = page.text
        assert "<script" not in html
        assert 5 == html.count("<svg ")
        for shown in (
            "Containment by process",
            "Cost per case, manual vs Podium (EUR)",
            "Time to resolution by process",
            "SLA attainment by process",
            "Containment by channel",
            f"Savings per month: <strong>{(3.95 * 4 + 6 * 3) * 30 / 7:,.2f} EUR",
            "<td>62.5%</td>",  # overall containment in the tables
            "a person&#x27;s minute costs 0.50 EUR",
            "no baseline, no ROI: handoff",
        ):
            assert shown in html
        # Bars are as long as their values: containment of handoff 0%, password_reset 100%,
        # refund 50% on the 440-pixel scale of the first chart.
        bars = re.findall(r'<rect class="bar" [^>]*width="([\d.]+)"', html.split("</svg>")[0])
        assert [0.0, 440.0, 220.0] == [float(width) for width in bars]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)
async def test_the_report_page_renders_its_charts_in_chromium(
    database: tuple[str, Engine], baseline_file: Path, tmp_path: Path
) -> None:
    async_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package")
    image = pytest.importorskip("PIL.Image", reason="needs Pillow to read the screenshot")
    from tests.test_ui_codec import CHROMIUM_ARGS

    url, _ = database
    app = create_app(api_settings(url, baseline_file), unreachable)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the API did not start"
            await asyncio.sleep(0.05)
        async with async_api.async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                context = await browser.new_context(
                    viewport={"width": 1280, "height": 900},
                    extra_http_headers=bearer("agent@example.com", ["agent"]),
                )
                page = await context.new_page()
                answer = await page.goto(f"http://127.0.0.1:{port}/reports?since=7d")
                assert answer is not None and 200 == answer.status
                assert 5 == await page.locator("svg.chart").count()
                assert 0 < await page.locator("svg.chart rect.bar").count()
                # The stylesheet loaded (the CSP allows it): the header is dark.
                background = await page.evaluate(
                    "getComputedStyle(document.querySelector('header')).backgroundColor"
                )
                assert "rgb(31, 41, 51)" == background
                box = await page.locator("svg.chart").first.bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 50
                shot = tmp_path / "reports.png"
                await page.screenshot(path=str(shot), full_page=True)
            finally:
                await browser.close()
    finally:
        server.should_exit = True
        await task
    with image.open(shot) as picture:
        rgb = picture.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 20, "the screenshot is blank"
        # The charts' bar blue is on the page.
        assert any(colour == (0x2F, 0x6F, 0xDE) for _, colour in colours)
