"""Payload encryption (core/codec.py), its data converter, the codec server, and history.

Pure tests of the AES-GCM codec and its key ring; then, on the real dev server, a failing
workflow and a real refund case whose personal data must not appear in the raw history (read
without the codec, and with the temporal CLI), but must appear once decoded (with the codec, and
through the codec server); replays of an encrypted history and of the committed plain ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import stat
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from google.protobuf.message import Message
from pydantic import BaseModel
from temporalio.api.common.v1 import Payload, SearchAttributes
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.common import HeaderCodecBehavior
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from core.codec import (
    DecryptionError,
    EncryptionCodec,
    EncryptionNotConfiguredError,
    KeyRing,
    KeyRingError,
    UnknownKeyError,
    key_ring,
)
from core.settings import Settings
from core.temporal import data_converter
from starter.codec_server import create_app, create_codec_app, dev_secrets
from starter.runtime import temporal_cli_args
from tests.codec_workflow import PLANTED_CARD, PLANTED_EMAIL, FailingWorkflow, leak
from tests.conftest import TEMPORAL_CLI, TEST_ENCRYPTION_KEYS
from tests.helpers import (
    fake_draft,
    fake_triage,
    make_worker,
    real_system_activities,
    seeded_engine,
    signed,
)
from tests.test_replay import HISTORIES
from worker import workflow_runner
from workflows.contracts.approval import ApprovalDecisionInput
from workflows.operations.workflow import WORKFLOWS as OPERATIONS
from workflows.refund.types import (
    CaseStatus,
    RefundCaseInput,
    RefundCaseResult,
    RefundCaseState,
    RefundOutcome,
)
from workflows.registry import PROCESSES

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
B64_1 = base64.b64encode(KEY_1).decode()
B64_2 = base64.b64encode(KEY_2).decode()
TOKEN = "codec-token-for-tests-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
UI_ORIGIN = "http://localhost:8233"


class Note(BaseModel):
    text: str


def plain_payload(text: str = f"card {PLANTED_CARD}") -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([Note(text=text)])[0]


def ring(*entries: str, active: str | None = None) -> KeyRing:
    return KeyRing.parse(",".join(entries), active)


# --- the codec ----------------------------------------------------------------------------------


async def test_round_trip_restores_the_exact_payload() -> None:
    codec = EncryptionCodec(ring(f"k1:{B64_1}"))
    original = plain_payload()
    [encrypted] = await codec.encode([original])
    [decrypted] = await codec.decode([encrypted])
    assert original == decrypted
    assert (
        Note(text=f"card {PLANTED_CARD}")
        == pydantic_data_converter.payload_converter.from_payloads([decrypted], [Note])[0]
    )


async def test_encrypted_payload_names_its_key_and_hides_value_and_type() -> None:
    codec = EncryptionCodec(ring(f"k1:{B64_1}"))
    original = plain_payload()
    [first, second] = await codec.encode([original, original])
    assert {"encoding": b"binary/encrypted", "encryption-key-id": b"k1"} == dict(first.metadata)
    assert PLANTED_CARD.encode() not in first.data
    assert b"json/plain" not in first.data
    # nonce (12) + the serialized original + GCM tag (16)
    assert 12 + len(original.SerializeToString()) + 16 == len(first.data)
    assert first.data[:12] != second.data[:12], "every payload gets a fresh nonce"


async def test_payloads_that_were_never_encrypted_pass_through_untouched() -> None:
    codec = EncryptionCodec(ring(f"k1:{B64_1}"))
    original = plain_payload()
    assert [original] == await codec.decode([original])


@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
async def test_tampered_ciphertext_fails_authentication(where: str) -> None:
    codec = EncryptionCodec(ring(f"k1:{B64_1}"))
    [encrypted] = await codec.encode([plain_payload()])
    data = bytearray(encrypted.data)
    data[{"nonce": 3, "ciphertext": 20, "tag": len(data) - 1}[where]] ^= 0x01
    tampered = Payload(metadata=encrypted.metadata, data=bytes(data))
    with pytest.raises(DecryptionError, match="'k1' failed authentication"):
        await codec.decode([tampered])


async def test_truncated_ciphertext_is_refused() -> None:
    codec = EncryptionCodec(ring(f"k1:{B64_1}"))
    [encrypted] = await codec.encode([plain_payload()])
    for size in (0, 5, 27, len(encrypted.data) - 1):
        truncated = Payload(metadata=encrypted.metadata, data=encrypted.data[:size])
        with pytest.raises(DecryptionError, match="'k1'"):
            await codec.decode([truncated])


async def test_key_id_is_bound_to_the_ciphertext() -> None:
    # Two ids for the same key: relabelling a payload must still fail (key id is associated data).
    codec = EncryptionCodec(ring(f"k1:{B64_1}", f"k2:{B64_1}", active="k1"))
    [encrypted] = await codec.encode([plain_payload()])
    relabelled = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": b"k2"},
        data=encrypted.data,
    )
    with pytest.raises(DecryptionError):
        await codec.decode([relabelled])


async def test_rotation_old_keys_decrypt_new_payloads_use_the_active_key() -> None:
    before = EncryptionCodec(ring(f"k1:{B64_1}"))
    [old] = await before.encode([plain_payload("old")])

    after = EncryptionCodec(ring(f"k1:{B64_1}", f"k2:{B64_2}", active="k2"))
    assert [plain_payload("old")] == await after.decode([old])
    [new] = await after.encode([plain_payload("new")])
    assert b"k2" == new.metadata["encryption-key-id"]
    assert [plain_payload("new")] == await after.decode([new])

    with pytest.raises(UnknownKeyError):
        await before.decode([new])  # a process still on the old ring cannot read k2 payloads


async def test_unknown_key_id_error_names_the_id_never_a_key() -> None:
    [old] = await EncryptionCodec(ring(f"retired-2023:{B64_1}")).encode([plain_payload()])
    with pytest.raises(UnknownKeyError) as caught:
        await EncryptionCodec(ring(f"k2:{B64_2}")).decode([old])
    message = str(caught.value)
    assert "'retired-2023'" in message
    assert "PODIUM_ENCRYPTION_KEYS" in message
    for secret in (B64_1, B64_2, KEY_1.hex(), KEY_2.hex(), repr(KEY_1), repr(KEY_2)):
        assert secret not in message


@pytest.mark.parametrize(
    ("entries", "active", "complaint"),
    [
        ("", None, "empty"),
        ("k1", None, "'kid:base64key'"),
        ("k1:not*base64", None, "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", None, "32 bytes"),
        (f"k1:{B64_1},k1:{B64_2}", "k1", "twice"),
        (f"k1:{B64_1},k2:{B64_2}", None, "PODIUM_ENCRYPTION_KEY_ID"),
        (f"k1:{B64_1}", "k9", "'k9' is not in the key ring"),
        (f"bad id:{B64_1}", None, "invalid key id"),
    ],
)
def test_malformed_key_rings_are_refused_without_echoing_keys(
    entries: str, active: str | None, complaint: str
) -> None:
    with pytest.raises(KeyRingError, match=complaint) as caught:
        KeyRing.parse(entries, active)
    assert B64_1 not in str(caught.value) and B64_2 not in str(caught.value)


def test_key_ring_repr_shows_ids_only() -> None:
    shown = repr(ring(f"k1:{B64_1}", f"k2:{B64_2}", active="k2"))
    assert "k1" in shown and "k2" in shown
    assert B64_1 not in shown and repr(KEY_1) not in shown


def test_urlsafe_base64_keys_are_accepted() -> None:
    key = bytes([0xFB, 0xFF] * 16)
    assert "k1" == ring(f"k1:{base64.urlsafe_b64encode(key).decode()}").active_key_id


def test_settings_decide_the_converter() -> None:
    keys = Settings(_env_file=None, encryption_keys=TEST_ENCRYPTION_KEYS)  # type: ignore[call-arg]
    converter = data_converter(keys)
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert "test-1" == converter.payload_codec.ring.active_key_id
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    assert pydantic_data_converter.payload_converter_class == converter.payload_converter_class

    off = Settings(_env_file=None, encryption="off")  # type: ignore[call-arg]
    assert key_ring(off) is None
    assert pydantic_data_converter is data_converter(off)

    missing = Settings(_env_file=None)  # type: ignore[call-arg]
    with pytest.raises(EncryptionNotConfiguredError, match="PODIUM_ENCRYPTION=off"):
        data_converter(missing)


# --- `podium up`'s development secrets ------------------------------------------------------------


def test_podium_up_creates_a_private_dev_key_and_token_once(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    resolved, env = dev_secrets(settings)
    key_file, token_file = tmp_path / "keys" / "encryption.key", tmp_path / "keys" / "codec-token"
    for path in (key_file, token_file):
        assert 0o600 == stat.S_IMODE(path.stat().st_mode)
    assert 0o700 == stat.S_IMODE(key_file.parent.stat().st_mode)
    assert key_file.read_text().strip() == env["PODIUM_ENCRYPTION_KEYS"]
    assert env["PODIUM_ENCRYPTION_KEYS"].startswith(env["PODIUM_ENCRYPTION_KEY_ID"] + ":")
    assert token_file.read_text().strip() == env["PODIUM_CODEC_TOKEN"]
    assert key_ring(resolved) is not None
    assert resolved.codec_token is not None

    again, env_again = dev_secrets(settings)  # a restart reads the same key: history stays readable
    assert env == env_again
    assert again.encryption_keys == resolved.encryption_keys


def test_podium_up_uses_configured_keys_and_nothing_when_off(tmp_path: Path) -> None:
    configured = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        encryption_keys=TEST_ENCRYPTION_KEYS,
        codec_token=TOKEN,
    )
    assert (configured, {}) == dev_secrets(configured)
    off = Settings(_env_file=None, data_dir=tmp_path, encryption="off")  # type: ignore[call-arg]
    assert (off, {}) == dev_secrets(off)
    assert not (tmp_path / "keys").exists()

    broken = Settings(_env_file=None, data_dir=tmp_path, encryption_keys="k1:n*pe")  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="not valid base64"):
        dev_secrets(broken)


def test_embedded_ui_is_pointed_at_the_codec_server(tmp_path: Path) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    args = temporal_cli_args(settings, tmp_path / "t.db", "http://127.0.0.1:8234")
    assert "http://127.0.0.1:8234" == args[args.index("--ui-codec-endpoint") + 1]
    assert "--ui-codec-endpoint" not in temporal_cli_args(settings, tmp_path / "t.db")


# --- the codec server ---------------------------------------------------------------------------


@pytest.fixture
async def codec_http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(EncryptionCodec(ring(TEST_ENCRYPTION_KEYS)), TOKEN, [UI_ORIGIN])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://codec") as http:
        yield http


def as_json(*payloads: Payload) -> dict[str, Any]:
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def from_json(body: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in p.get("metadata", {}).items()},
            data=base64.b64decode(p.get("data", "")),
        )
        for p in body["payloads"]
    ]


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/decode", {}),
        ("/decode", {"Authorization": "Bearer wrong-token-wrong-token"}),
        ("/decode", {"Authorization": f"Basic {TOKEN}"}),
        ("/encode", {}),
        ("/t/wrong-token-wrong-token/decode", {}),
    ],
)
async def test_codec_server_refuses_without_the_token(
    codec_http: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    [encrypted] = await EncryptionCodec(ring(TEST_ENCRYPTION_KEYS)).encode([plain_payload()])
    response = await codec_http.post(path, json=as_json(encrypted), headers=headers)
    assert 401 == response.status_code
    assert "application/problem+json" == response.headers["content-type"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem = response.json()
    assert 401 == problem["status"] and "urn:podium:problem:unauthorized" == problem["type"]
    assert PLANTED_CARD not in response.text and "wrong-token" not in response.text


@pytest.mark.parametrize("path_token", [False, True], ids=["bearer", "path"])
async def test_codec_server_decodes_a_real_payload_with_the_token(
    codec_http: httpx.AsyncClient, path_token: bool
) -> None:
    original = plain_payload()
    [encrypted] = await EncryptionCodec(ring(TEST_ENCRYPTION_KEYS)).encode([original])
    untouched = plain_payload("never encrypted")
    path = f"/t/{TOKEN}/decode" if path_token else "/decode"
    headers = {"X-Namespace": "default", "Origin": UI_ORIGIN}
    if not path_token:
        headers["Authorization"] = f"Bearer {TOKEN}"
    response = await codec_http.post(path, json=as_json(encrypted, untouched), headers=headers)
    assert 200 == response.status_code, response.text
    assert UI_ORIGIN == response.headers["access-control-allow-origin"]
    assert [original, untouched] == from_json(response.json())


async def test_codec_server_encode_then_decode(codec_http: httpx.AsyncClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    encoded = await codec_http.post("/encode", json=as_json(plain_payload()), headers=auth)
    assert 200 == encoded.status_code
    [encrypted] = from_json(encoded.json())
    assert b"binary/encrypted" == encrypted.metadata["encoding"]
    decoded = await codec_http.post("/decode", json=encoded.json(), headers=auth)
    assert [plain_payload()] == from_json(decoded.json())
    empty = await codec_http.post("/decode", json={"payloads": []}, headers=auth)
    assert {"payloads": []} == empty.json()


async def test_codec_server_names_an_unknown_key_and_refuses_garbage(
    codec_http: httpx.AsyncClient,
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    [foreign] = await EncryptionCodec(ring(f"other:{B64_2}")).encode([plain_payload()])
    response = await codec_http.post("/decode", json=as_json(foreign), headers=auth)
    assert 422 == response.status_code
    assert "'other'" in response.json()["detail"] and B64_2 not in response.text
    garbage = await codec_http.post("/decode", content=b"{not json", headers=auth)
    assert 400 == garbage.status_code


async def test_codec_server_cors_allows_the_ui_origin_only(codec_http: httpx.AsyncClient) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
    }
    allowed = await codec_http.options("/decode", headers={**preflight, "Origin": UI_ORIGIN})
    assert 200 == allowed.status_code
    assert UI_ORIGIN == allowed.headers["access-control-allow-origin"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    refused = await codec_http.options(
        "/decode", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert 400 == refused.status_code
    assert "access-control-allow-origin" not in refused.headers

    # A simple request from elsewhere gets no CORS grant: the browser hides the answer.
    other = await codec_http.post(
        "/decode",
        json={"payloads": []},
        headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_codec_server_needs_keys_a_token_and_defaults_to_the_ui_origins() -> None:
    with pytest.raises(ValueError, match="PODIUM_CODEC_TOKEN"):
        create_codec_app(Settings(_env_file=None, encryption_keys=TEST_ENCRYPTION_KEYS))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="off"):
        create_codec_app(Settings(_env_file=None, encryption="off", codec_token=TOKEN))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="at least"):
        create_app(EncryptionCodec(ring(TEST_ENCRYPTION_KEYS)), "short", [UI_ORIGIN])
    app = create_codec_app(
        Settings(_env_file=None, encryption_keys=TEST_ENCRYPTION_KEYS, codec_token=TOKEN)  # type: ignore[call-arg]
    )
    cors = next(m for m in app.user_middleware if m.cls.__name__ == "CORSMiddleware")
    assert ["http://localhost:8233", "http://127.0.0.1:8233"] == cors.kwargs["allow_origins"]


# --- history on the real dev server -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raw_bytes(history: WorkflowHistory) -> bytes:
    return b"".join(event.SerializeToString() for event in history.events)


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload inside a proto message, with where it sits; search attributes excluded
    (the server indexes them: they cannot be encrypted, and Podium keeps ids only there)."""
    if isinstance(message, Payload):
        yield path, message
        return
    if isinstance(message, SearchAttributes):
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if field.message_type is None:
            continue
        if isinstance(value, Message):
            yield from payloads_in(value, where)
        elif hasattr(value, "items"):  # a map
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from payloads_in(item, f"{where}[{key}]")
        else:  # a repeated field
            for index, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{index}]")


def unencrypted_payloads(history: WorkflowHistory) -> list[str]:
    """Where history holds a payload in clear. Exempt: what the SDK core writes and reads
    itself, outside any codec, never Podium's data: version markers (the patch id) and a local
    activity marker's `data` detail (its sequence number, activity type and id, attempt and
    times). A local activity's result (who decided, for `verify_decision`) is encrypted."""
    return [
        f"{event.event_type}{where}"
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name != "core_patch"
        for where, payload in payloads_in(event)
        if payload.metadata.get("encoding") != b"binary/encrypted"
        and not (
            event.marker_recorded_event_attributes.marker_name == "core_local_activity"
            and where.endswith("details[data].payloads[0]")
        )
    ]


async def run_failing(client: Client) -> tuple[WorkflowHistory, WorkflowFailureError]:
    async with Worker(
        client,
        task_queue=f"codec-{uuid.uuid4().hex}",
        workflows=[FailingWorkflow],
        activities=[leak],
        workflow_runner=workflow_runner(),
    ) as worker:
        handle = await client.start_workflow(
            FailingWorkflow.run, "C-1", id=f"codec-{uuid.uuid4().hex}", task_queue=worker.task_queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    return await handle.fetch_history(), failed.value


async def test_failure_messages_and_stack_traces_are_encrypted_in_history(
    dev_env: WorkflowEnvironment, encrypted_dev_client: Client
) -> None:
    history, failed = await run_failing(encrypted_dev_client)

    # Read with a client that has no codec: what the server, its database and the UI hold.
    plain_history = await dev_env.client.get_workflow_handle(history.workflow_id).fetch_history()
    raw = raw_bytes(plain_history)
    for planted in (PLANTED_EMAIL, PLANTED_CARD, "declined for", "refund refused"):
        assert planted.encode() not in raw
    failures = [
        e.workflow_execution_failed_event_attributes.failure
        for e in plain_history.events
        if e.HasField("workflow_execution_failed_event_attributes")
    ] + [
        e.activity_task_failed_event_attributes.failure
        for e in plain_history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert 2 == len(failures)
    for failure in failures:
        assert "Encoded failure" == failure.message
        assert "" == failure.stack_trace
        assert b"binary/encrypted" == failure.encoded_attributes.metadata["encoding"]
    assert [] == unencrypted_payloads(plain_history)

    # Decoded with the codec, the failures say what happened.
    assert isinstance(failed.cause, ApplicationError)
    assert f"refund refused for {PLANTED_EMAIL}, card {PLANTED_CARD}" == failed.cause.message
    activity_failure = await encrypted_dev_client.data_converter.decode_failure(failures[1])
    assert isinstance(activity_failure, ApplicationError) and activity_failure.failure
    assert f"card {PLANTED_CARD} declined for {PLANTED_EMAIL}" == activity_failure.message
    assert "codec_workflow.py" in activity_failure.failure.stack_trace


async def test_without_the_codec_the_same_failures_would_be_readable(
    dev_env: WorkflowEnvironment,
) -> None:
    """The control for the test above: it would catch a converter that encrypts nothing."""
    history, _ = await run_failing(dev_env.client)
    assert PLANTED_EMAIL.encode() in raw_bytes(history)
    assert unencrypted_payloads(history)


@asynccontextmanager
async def serving_codec(origins: list[str]) -> AsyncIterator[str]:
    """The codec server on a free loopback port, in this event loop; yields its URL."""
    port = free_port()
    app = create_app(EncryptionCodec(ring(TEST_ENCRYPTION_KEYS)), TOKEN, origins)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def codec_server() -> AsyncIterator[str]:
    async with serving_codec([UI_ORIGIN]) as url:
        yield url


async def temporal_show(env: WorkflowEnvironment, workflow_id: str, *codec: str) -> str:
    """`temporal workflow show --output json`, as an operator would run it."""
    process = await asyncio.create_subprocess_exec(
        str(TEMPORAL_CLI),
        "workflow",
        "show",
        "--workflow-id",
        workflow_id,
        "--address",
        env.client.service_client.config.target_host,
        "--namespace",
        env.client.namespace,
        "--output",
        "json",
        *codec,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert 0 == process.returncode, err.decode()
    return out.decode()


def decoded_text(shown: str) -> str:
    """The CLI's JSON with every payload's base64 `data` decoded, to search it for plaintext."""

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    yield base64.b64decode(value + "=" * (-len(value) % 4)).decode(errors="replace")
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)
        elif isinstance(node, str):
            yield node

    return "\n".join(walk(json.loads(shown)))


async def wait_for_status(handle: Any, status: CaseStatus) -> RefundCaseState:
    state: RefundCaseState | None = None
    for _ in range(300):
        state = await handle.query("get_state", result_type=RefundCaseState)
        if state.status == status:
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"case never reached {status}; last {state}")


@pytest.mark.timeout(180)
async def test_refund_case_history_holds_no_personal_data_in_clear(
    dev_env: WorkflowEnvironment,
    encrypted_dev_client: Client,
    encrypted_converter: DataConverter,
    codec_server: str,
    tmp_path: Path,
) -> None:
    engine = seeded_engine(tmp_path)
    message = (
        f"My order O-5003 arrived broken, refund it to card {PLANTED_CARD} "
        f"and write to {PLANTED_EMAIL}"
    )
    approver = "approver.planted@example.com"
    with ThreadPoolExecutor(max_workers=4) as executor:
        worker = make_worker(
            encrypted_dev_client,
            [*real_system_activities(engine), fake_triage, fake_draft],
            executor,
        )
        async with worker:
            handle = await encrypted_dev_client.start_workflow(
                "refund",
                RefundCaseInput(
                    channel="email", customer_id="C-1002", order_id="O-5003", message=message
                ),
                id=f"refund-codec-{uuid.uuid4().hex}",
                task_queue=worker.task_queue,
                result_type=RefundCaseResult,
            )
            state = await wait_for_status(handle, CaseStatus.AWAITING_APPROVAL)
            assert state.approval is not None
            await handle.execute_update(
                "decide",
                signed(
                    handle.id,
                    ApprovalDecisionInput(
                        request_id=state.approval.request_id,
                        approve=True,
                        approver=approver,
                        approver_roles=["team_lead"],
                        comment=f"ok, card {PLANTED_CARD} checked",
                    ),
                ),
                result_type=None,
            )
            result = await handle.result()
    engine.dispose()
    assert RefundOutcome.APPROVED == result.outcome
    planted = (PLANTED_CARD, PLANTED_EMAIL, approver, "arrived broken")

    # The raw history, read without the codec and by the temporal CLI: nothing readable.
    history = await dev_env.client.get_workflow_handle(handle.id).fetch_history()
    raw = raw_bytes(history)
    shown = await temporal_show(dev_env, handle.id)
    for text in planted:
        assert text.encode() not in raw
        assert text not in decoded_text(shown)
    assert [] == unencrypted_payloads(history)

    # Decoded with the codec (Podium's clients), and through the codec server (the CLI and UI).
    [case_input] = await encrypted_converter.decode(
        history.events[0].workflow_execution_started_event_attributes.input.payloads,
        [RefundCaseInput],
    )
    assert message == case_input.message
    through_server = decoded_text(
        await temporal_show(
            dev_env,
            handle.id,
            "--codec-endpoint",
            codec_server,
            "--codec-auth",
            f"Bearer {TOKEN}",
        )
    )
    for text in planted:
        assert text in through_server

    # The encrypted history replays with the codec converter, and not without it.
    encrypted_history = await handle.fetch_history()
    await Replayer(
        workflows=PROCESSES.workflows,
        data_converter=encrypted_converter,
        workflow_runner=workflow_runner(),
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    ).replay_workflow(encrypted_history)
    with pytest.raises(Exception):  # noqa: B017 - any failure: it cannot read the input
        await Replayer(
            workflows=PROCESSES.workflows,
            data_converter=pydantic_data_converter,
            workflow_runner=workflow_runner(),
        ).replay_workflow(encrypted_history)


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_committed_plain_histories_replay_with_the_codec_converter(
    path: Path, encrypted_converter: DataConverter
) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    assert unencrypted_payloads(history), "recorded before encryption: payloads in clear"
    await Replayer(
        workflows=[*PROCESSES.workflows, *OPERATIONS],
        data_converter=encrypted_converter,
        workflow_runner=workflow_runner(),
        header_codec_behavior=HeaderCodecBehavior.CODEC,
    ).replay_workflow(history)


# --- the Temporal UI, in a browser ----------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium (.ci/run installs it)",
)
@pytest.mark.timeout(180)
async def test_temporal_ui_shows_payloads_decrypted_only_with_the_token(
    encrypted_converter: DataConverter,
) -> None:
    """The real Temporal UI, pointed at the codec server as `podium up` points it: without the
    token it cannot decrypt; with the token in its codec endpoint setting, the operator reads
    the case's message. Exercises the protocol, CORS (the UI's origin) and the path token."""
    async_api = pytest.importorskip("playwright.async_api", reason="needs playwright")
    ui_port = free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    async with serving_codec([ui, f"http://localhost:{ui_port}"]) as codec_url:
        env = await WorkflowEnvironment.start_local(
            data_converter=encrypted_converter,
            dev_server_existing_path=str(TEMPORAL_CLI),
            ui=True,
            ui_port=ui_port,
            dev_server_extra_args=["--ui-codec-endpoint", codec_url],
        )
        try:
            workflow_id = f"refund-ui-{uuid.uuid4().hex}"
            # No worker: the started event alone holds the (encrypted) input.
            await env.client.start_workflow(
                "refund",
                RefundCaseInput(
                    channel="email",
                    customer_id="C-1002",
                    order_id="O-5003",
                    message=f"refund to {PLANTED_EMAIL} please",
                ),
                id=workflow_id,
                task_queue=f"nobody-{uuid.uuid4().hex}",
            )
            page_url = f"{ui}/namespaces/default/workflows/{workflow_id}"
            async with async_api.async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
                )
                try:
                    page = await browser.new_page()
                    async with page.expect_response(
                        lambda r: r.url.startswith(codec_url) and r.request.method == "POST"
                    ) as refused:
                        await page.goto(page_url)
                    assert 401 == (await refused.value).status
                    await page.wait_for_timeout(1_000)
                    assert PLANTED_EMAIL not in await page.content()

                    # The operator's browser setting: the endpoint with the token in its path.
                    await page.evaluate(
                        """(endpoint) => {
                            localStorage.setItem('endpoint', JSON.stringify(endpoint));
                            localStorage.setItem('overrideRemoteCodecConfiguration', 'true');
                        }""",
                        f"{codec_url}/t/{TOKEN}",
                    )
                    async with page.expect_response(
                        lambda r: r.url.startswith(codec_url) and r.request.method == "POST"
                    ) as decoded:
                        await page.goto(page_url)
                    assert 200 == (await decoded.value).status
                    await page.get_by_text(PLANTED_EMAIL).first.wait_for(timeout=30_000)
                finally:
                    await browser.close()
        finally:
            await env.shutdown()
