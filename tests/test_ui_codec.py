"""The Temporal UI tells a case's story out of the box, and the codec server stays closed.

1. The codec server's local-operator rule (`--trust-local-ui`, starter/codec_server.py), on a
   real loopback socket: a browser request from the embedded UI's origin decodes without a
   token; without the rule, from another origin, under a rebound host name, from another user
   of this machine (when the test may switch users) or from a non-loopback peer, it is a 401.
2. `podium up` as a newcomer runs it, and the embedded Temporal UI in Debian's Chromium (driven
   by Playwright, never `playwright install`): a refund case waits for approval; its page shows
   the summary and the current details as decoded text, no codec error banner, no ciphertext;
   the screenshot goes to the test's tmp dir. The same codec server refuses callers without the
   token that are not the local operator's UI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.api.common.v1 import Payload

from core.codec import EncryptionCodec, KeyRing
from core.settings import Settings
from starter.codec_server import create_app, local_ui_trust, peer_uid
from tests.conftest import TEST_ENCRYPTION_KEYS
from tests.podium_stack import PodiumUp, free_port

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
TOKEN = "codec-token-for-tests-0123456789"
SECRET = "card 4111 1111 1111 1111"
ENCRYPTED = base64.b64encode(b"binary/encrypted").decode()
CODEC_ERROR = "Codec Server could not connect"
NOBODY = 65534


async def encrypted_body() -> dict[str, Any]:
    [payload] = await EncryptionCodec(KeyRing.parse(TEST_ENCRYPTION_KEYS)).encode(
        [Payload(metadata={"encoding": b"json/plain"}, data=f'"{SECRET}"'.encode())]
    )
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
                "data": base64.b64encode(payload.data).decode(),
            }
        ]
    }


@asynccontextmanager
async def serving(*, trust_local_ui: bool) -> AsyncIterator[tuple[str, str]]:
    """The codec server on a free loopback port in this event loop, configured for an embedded
    UI on another free port; yields (codec URL, UI origin)."""
    port, ui_port = free_port(), free_port()
    settings = Settings(_env_file=None, codec_port=port, temporal_ui_port=ui_port)
    app = create_app(
        EncryptionCodec(KeyRing.parse(TEST_ENCRYPTION_KEYS)),
        TOKEN,
        [f"http://localhost:{ui_port}"],
        local_trust=local_ui_trust(settings) if trust_local_ui else None,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", f"http://localhost:{ui_port}"
    finally:
        server.should_exit = True
        await task


async def decode(url: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{url}/decode", json=await encrypted_body(), headers=headers)


def refused(response: httpx.Response) -> bool:
    return (
        401 == response.status_code
        and response.headers["content-type"] == "application/problem+json"
        and SECRET not in response.text
    )


async def test_the_embedded_ui_origin_decodes_over_loopback_without_a_token() -> None:
    async with serving(trust_local_ui=True) as (url, ui):
        response = await decode(url, {"Origin": ui})
        assert 200 == response.status_code, response.text
        data = base64.b64decode(response.json()["payloads"][0]["data"]).decode()
        assert f'"{SECRET}"' == data
        # A browser's preflight from that origin is answered too.
        async with httpx.AsyncClient(timeout=30) as http:
            preflight = await http.options(
                f"{url}/decode",
                headers={
                    "Origin": ui,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type,x-namespace",
                },
            )
        assert 200 == preflight.status_code
        assert ui == preflight.headers["access-control-allow-origin"]


@pytest.mark.parametrize(
    "case",
    [
        "no origin",
        "another origin",
        "origin of a look-alike port",
        "origin on an address the UI does not listen on",
        "rebound host name",
    ],
)
async def test_other_callers_without_the_token_are_refused(case: str) -> None:
    async with serving(trust_local_ui=True) as (url, ui):
        port = url.rsplit(":", 1)[1]
        headers = {
            "no origin": {},
            "another origin": {"Origin": "http://evil.example"},
            "origin of a look-alike port": {"Origin": ui + "0"},
            # Another local account could serve a page there.
            "origin on an address the UI does not listen on": {
                "Origin": ui.replace("localhost", "[::1]")
            },
            # DNS rebinding: the page's own (attacker's) name resolved to 127.0.0.1.
            "rebound host name": {"Origin": ui, "Host": f"evil.example:{port}"},
        }[case]
        assert refused(await decode(url, headers))


async def test_without_the_rule_the_ui_origin_needs_the_token() -> None:
    async with serving(trust_local_ui=False) as (url, ui):
        assert refused(await decode(url, {"Origin": ui}))
        assert 200 == (await decode(url, {"Authorization": f"Bearer {TOKEN}"})).status_code


async def test_a_token_is_still_checked_when_one_is_presented() -> None:
    async with serving(trust_local_ui=True) as (url, ui):
        wrong = {"Origin": ui, "Authorization": "Bearer wrong-token-wrong-token"}
        assert refused(await decode(url, wrong))


async def test_a_non_loopback_peer_is_refused_whatever_its_headers() -> None:
    settings = Settings(_env_file=None)
    app = create_app(
        EncryptionCodec(KeyRing.parse(TEST_ENCRYPTION_KEYS)),
        TOKEN,
        [f"http://localhost:{settings.temporal_ui_port}"],
        local_trust=local_ui_trust(settings),
    )
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    base = f"http://127.0.0.1:{settings.codec_port}"
    async with httpx.AsyncClient(transport=transport, base_url=base) as http:
        response = await http.post(
            "/decode",
            json=await encrypted_body(),
            headers={"Origin": f"http://localhost:{settings.temporal_ui_port}"},
        )
    assert refused(response)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="Linux reports socket owners")
def test_peer_uid_names_the_user_at_the_other_end_of_a_loopback_connection() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()),
    ):
        accepted, peer = server.accept()
        with accepted:
            assert os.getuid() == peer_uid(peer, accepted.getsockname())
            assert peer_uid(("127.0.0.1", 1), accepted.getsockname()) is None


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.geteuid() == 0),
    reason="needs root to call as another user",
)
async def test_another_user_of_this_machine_is_refused_even_with_the_ui_origin() -> None:
    async with serving(trust_local_ui=True) as (url, ui):
        script = (
            "import urllib.error, urllib.request\n"
            f"request = urllib.request.Request({url + '/decode'!r}, data=b'{{\"payloads\": []}}',"
            f" headers={{'Origin': {ui!r}, 'Content-Type': 'application/json'}})\n"
            "try:\n"
            "    print(urllib.request.urlopen(request, timeout=30).status)\n"
            "except urllib.error.HTTPError as err:\n"
            "    print(err.code)\n"
        )
        # The system Python: the other user need not read this virtualenv.
        process = await asyncio.create_subprocess_exec(
            "/usr/bin/python3",
            "-c",
            script,
            user=NOBODY,
            group=NOBODY,
            cwd="/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert "401" == out.decode().strip(), err.decode()
        assert 200 == (await decode(url, {"Origin": ui})).status_code  # this user: admitted


# --- `podium up` and the embedded Temporal UI in Chromium ---------------------------------------


@pytest.fixture
def up(tmp_path: Path) -> Iterator[PodiumUp]:
    stack = PodiumUp(tmp_path / "var")
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async_api = pytest.importorskip("playwright.async_api", reason="needs the playwright package")
    async with async_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


async def wait_for_status(http: httpx.AsyncClient, case_id: str, status: str) -> None:
    for _ in range(600):
        response = await http.get(f"/cases/{case_id}")
        if response.status_code == 200 and response.json()["state"]["status"] == status:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"case {case_id} never reached {status}")


async def all_text(page: Any) -> str:
    """The visible text of the page and every frame in it."""
    texts = []
    for frame in page.frames:
        with contextlib.suppress(Exception):  # a frame may go away while it is read
            texts.append(await frame.inner_text("body"))
    return "\n".join(texts)


async def eventually_shown(page: Any, expected: list[str]) -> str:
    text = ""
    for _ in range(240):
        text = await all_text(page)
        if all(item in text for item in expected):
            return text
        await asyncio.sleep(0.5)
    missing = [item for item in expected if item not in text]
    raise AssertionError(f"the UI never showed {missing}; it showed:\n{text[:3000]}")


@pytest.mark.e2e
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
)
@pytest.mark.timeout(600)
async def test_a_newcomer_reads_a_case_in_the_temporal_ui_after_podium_up(
    up: PodiumUp, browser: Any, tmp_path: Path
) -> None:
    await asyncio.to_thread(up.start)
    service = up.token("service:demo", ["service"])
    async with httpx.AsyncClient(
        base_url=up.api_url, timeout=60, headers={"Authorization": f"Bearer {service}"}
    ) as http:
        created = await http.post(
            "/cases/refund",
            json={
                "channel": "email",
                "customer_id": "C-1002",
                "order_id": "O-5003",
                "message": "My order O-5003 arrived broken, I want my money back",
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert 201 == created.status_code, created.text
        case_id = created.json()["case_id"]
        await wait_for_status(http, case_id, "awaiting_approval")

    page = await browser.new_page(viewport={"width": 1400, "height": 1800})
    codec_calls: list[int] = []
    page.on(
        "response",
        lambda r: codec_calls.append(r.status) if r.url.startswith(up.codec_url) else None,
    )
    # As a newcomer: the UI's address from the banner, no setting touched, no token pasted.
    await page.goto(f"{up.ui_url}/namespaces/default/workflows/{case_id}")
    # The input, on the first tab...
    await page.get_by_text('"customer_id": "C-1002"').first.wait_for(timeout=120_000)
    # ...then the summary, details and current details (the UI renders each in its own frame).
    await page.get_by_role("tab", name="User Metadata").click()
    expected = [
        "Refund request from C-1002 for order O-5003 via email",  # summary
        "My order O-5003 arrived broken, I want my money back",  # details
        "Status: awaiting_approval",  # current details, from the workflow
        "Assessment: recommend",
    ]
    text = await eventually_shown(page, expected)
    screenshot = tmp_path / "temporal-ui-case.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    print(f"screenshot: {screenshot}")

    assert CODEC_ERROR not in text
    assert codec_calls and all(200 == status for status in codec_calls), codec_calls
    html = "\n".join([await frame.content() for frame in page.frames])
    assert ENCRYPTED not in html and "binary/encrypted" not in html  # no ciphertext shown

    # The same codec server, to anyone but that browser: the token or nothing.
    body: dict[str, list[object]] = {"payloads": []}
    async with httpx.AsyncClient(base_url=up.codec_url, timeout=30) as http:
        for headers in ({}, {"Origin": "http://evil.example"}, {"Authorization": "Bearer nope"}):
            response = await http.post("/decode", json=body, headers=headers)
            assert 401 == response.status_code, headers
