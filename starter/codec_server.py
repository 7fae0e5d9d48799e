"""The codec server: decrypts (and encrypts) Podium's payloads for the Temporal UI and CLI.

    python -m starter.codec_server      # `podium up` starts it next to the worker and the API

It speaks Temporal's remote codec protocol: `POST <endpoint>/decode` and `POST <endpoint>/encode`
with the payloads as protobuf JSON, `{"payloads": [{"metadata": {k: base64}, "data": base64}]}`,
and the namespace in `X-Namespace`; the answer has the same shape. Payloads that were never
encrypted come back untouched.

It runs on its own loopback port (`PODIUM_CODEC_PORT`, default 8234) rather than inside the HTTP
API: it is the one Podium surface that turns ciphertext into plaintext, so it gets its own
process, its own credentials and its own CORS policy, and can be firewalled, scaled or left off
without touching the business API (which never needs it: its clients decrypt in-process).

Access:
- Authentication: `Authorization: Bearer <PODIUM_CODEC_TOKEN>` (the temporal CLI sends it with
  `--codec-auth "Bearer <token>"`). The Temporal UI sends a bearer token only when it has its own
  OIDC login, over HTTPS; a UI without one may carry the token in the endpoint's path,
  `http://127.0.0.1:8234/t/<token>`, which the protocol allows (an endpoint may live at any
  path; only the final segment names the operation). Anything else gets 401 problem+json.
- The local operator (`--trust-local-ui`, which `podium up` passes for its embedded UI): a
  browser showing the embedded Temporal UI on this machine decodes without a token. A request is
  trusted only when all of these hold: the peer is a loopback address; its `Origin` is one of the
  embedded UI's loopback origins (a browser never lets a page forge `Origin`, so other web sites
  open in the operator's browser are refused); `Host` names this server by a loopback name (no
  DNS rebinding); and, on Linux, the peer's socket belongs to the user running this server (read
  from /proc/net/tcp), so another account on a shared machine is refused even though it could
  forge the headers. Off by default: a standalone codec server trusts tokens only.
- CORS: browsers may call it only from the Temporal UI's origins (`PODIUM_CODEC_CORS_ORIGINS`,
  default the embedded UI on localhost and 127.0.0.1); preflights from other origins are refused.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import ipaddress
import os
import secrets
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog
import uvicorn
from google.protobuf import json_format
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from core.codec import (
    CodecError,
    EncryptionCodec,
    load_or_create_key_file,
    load_or_create_secret,
)
from core.codec import key_ring as configured_key_ring
from core.logging import configure_logging
from core.settings import Settings

__all__ = [
    "LocalTrust",
    "allowed_origins",
    "codec_banner",
    "codec_url",
    "create_app",
    "create_codec_app",
    "dev_secrets",
    "local_ui_trust",
    "main",
    "peer_uid",
]

log = structlog.get_logger()

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:podium:problem:"
MAX_BODY_BYTES = 16 * 1024 * 1024
MIN_TOKEN_LENGTH = 16
KEYS_DIR = "keys"


def _problem(status: int, slug: str, title: str, detail: str, path: str) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="podium-codec"'} if status == 401 else None
    return JSONResponse(
        {
            "type": PROBLEM_TYPE_PREFIX + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": path,
        },
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _presented_token(request: Request) -> str | None:
    in_path = request.path_params.get("token")
    if isinstance(in_path, str):
        return in_path
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


PROC_NET_TCP = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


@dataclass(frozen=True)
class LocalTrust:
    """Who decodes without the token: a browser at one of `origins` (the embedded Temporal UI),
    connected over loopback to this server under one of `hosts`, run by this server's user."""

    origins: frozenset[str]
    hosts: frozenset[str]


def _plain(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _loopback(host: str) -> bool:
    try:
        return _plain(host).is_loopback
    except ValueError:
        return False


def _proc_address(field: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """`0100007F:1F90` (/proc/net/tcp: 32-bit words in host byte order, port big-endian)."""
    raw, _, port = field.partition(":")
    words = b"".join(struct.pack("=I", int(raw[i : i + 8], 16)) for i in range(0, len(raw), 8))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return _plain(socket.inet_ntop(family, words)), int(port, 16)


def peer_uid(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The user owning the other end of the loopback TCP connection `peer` -> `local`, from
    Linux's /proc/net/tcp{,6}; None when the kernel does not say (no such connection, no /proc)."""
    want = ((_plain(peer[0]), peer[1]), (_plain(local[0]), local[1]))
    for table in PROC_NET_TCP:
        try:
            rows = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 7 and (_proc_address(fields[1]), _proc_address(fields[2])) == want:
                return int(fields[7])
    return None


def _locally_trusted(request: Request, trust: LocalTrust) -> str | None:
    """None when `request` comes from the local operator's embedded UI, else why not."""
    client, server = request.scope.get("client"), request.scope.get("server")
    if not client or not server or not _loopback(client[0]):
        return "not loopback"
    if request.headers.get("origin") not in trust.origins:
        return "origin"
    if request.headers.get("host", "").lower() not in trust.hosts:
        return "host"
    linux = PROC_NET_TCP[0].exists()  # there the kernel names the peer's user
    peer, local = (client[0], int(client[1])), (server[0], int(server[1]))
    if linux and peer_uid(peer, local) != os.getuid():
        return "another user"
    return None


def create_app(
    codec: PayloadCodec,
    token: str,
    origins: Sequence[str],
    *,
    local_trust: LocalTrust | None = None,
) -> Starlette:
    """The codec server for `codec`, open to callers presenting `token`, browsers at `origins`,
    and, with `local_trust`, to the local operator's embedded Temporal UI."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the codec token must be at least {MIN_TOKEN_LENGTH} characters")
    expected = token.encode()

    async def handle(request: Request) -> Response:
        operation = request.url.path.rsplit("/", 1)[-1]
        namespace = request.headers.get("x-namespace", "")
        instance = f"/{operation}"  # never echo a path that holds the token
        presented = _presented_token(request)
        if presented is not None:
            refused = None if hmac.compare_digest(presented.encode(), expected) else "wrong token"
        elif local_trust is not None:
            # Reads /proc/net/tcp: a file, so off the event loop.
            untrusted = await asyncio.to_thread(_locally_trusted, request, local_trust)
            refused = None if untrusted is None else f"no token, not the local UI ({untrusted})"
        else:
            refused = "no token"
        if refused is not None:
            log.warning(
                "codec_request_refused",
                operation=operation,
                namespace=namespace,
                reason=refused,
                client=request.client.host if request.client else None,
            )
            return _problem(
                401,
                "unauthorized",
                "Unauthorized",
                "Present the codec token: 'Authorization: Bearer <token>', or an endpoint "
                "ending in /t/<token>",
                instance,
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _problem(413, "too-large", "Content too large", "Send fewer payloads", instance)
        try:
            payloads = json_format.Parse(body, Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return _problem(400, "invalid-payloads", "Invalid payloads", str(err), instance)
        try:
            if operation == "decode":
                result = await codec.decode(list(payloads.payloads))
            else:
                result = await codec.encode(list(payloads.payloads))
        except CodecError as err:
            log.warning("codec_request_failed", operation=operation, error=str(err))
            return _problem(422, "codec-failed", "Payloads cannot be converted", str(err), instance)
        log.info("codec_request", operation=operation, namespace=namespace, payloads=len(result))
        answer = json_format.MessageToDict(Payloads(payloads=result))
        answer.setdefault("payloads", [])  # protobuf JSON leaves out an empty list
        return JSONResponse(answer)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    routes = [
        Route(path, handle, methods=["POST"])
        for path in ("/encode", "/decode", "/t/{token}/encode", "/t/{token}/decode")
    ]
    routes.append(Route("/healthz", healthz, methods=["GET"]))
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=list(origins),
                allow_methods=["POST"],
                allow_headers=["Authorization", "Content-Type", "X-Namespace"],
                max_age=600,
            )
        ],
    )


def allowed_origins(settings: Settings) -> list[str]:
    """`PODIUM_CODEC_CORS_ORIGINS`, else the Temporal UI's: embedded on both loopback names,
    plus `PODIUM_TEMPORAL_UI_URL`'s origin when one is set."""
    if settings.codec_cors_origins is not None:
        return list(settings.codec_cors_origins)
    origins = [
        f"http://localhost:{settings.temporal_ui_port}",
        f"http://127.0.0.1:{settings.temporal_ui_port}",
    ]
    if settings.temporal_ui_url:
        parts = urlsplit(settings.temporal_ui_url)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return list(dict.fromkeys(origins))


def local_ui_trust(settings: Settings) -> LocalTrust:
    """The embedded Temporal UI (`temporal server start-dev --ip 127.0.0.1`) as the local
    operator's: only the names it is served under, never an address it does not listen on."""
    names = ("localhost", "127.0.0.1")
    origins = {f"http://{name}:{settings.temporal_ui_port}" for name in names}
    hosts = {f"{name}:{settings.codec_port}" for name in (*names, "[::1]")}
    return LocalTrust(frozenset(origins), frozenset(hosts))


def create_codec_app(settings: Settings, *, trust_local_ui: bool = False) -> Starlette:
    """The codec server configured by `settings`; refuses to build without keys or a token.
    `trust_local_ui`: the embedded UI's browser on this machine decodes without the token."""
    ring = configured_key_ring(settings)
    if ring is None:
        raise ValueError("PODIUM_ENCRYPTION=off: there is nothing for a codec server to decode")
    if settings.codec_token is None:
        raise ValueError("set PODIUM_CODEC_TOKEN: the codec server does not run unauthenticated")
    return create_app(
        EncryptionCodec(ring),
        settings.codec_token.get_secret_value(),
        allowed_origins(settings),
        local_trust=local_ui_trust(settings) if trust_local_ui else None,
    )


def codec_url(settings: Settings) -> str:
    """Where a browser or the temporal CLI on this machine reaches the codec server."""
    host = settings.codec_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.codec_port}"


def dev_secrets(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """For `podium up`: the key ring and codec token, created once under the data folder when
    not configured. Returns the settings that use them and the environment for its children;
    raises RuntimeError, naming the problem (never a key), when the keys are unusable."""
    if settings.encryption == "off":
        return settings, {}
    update: dict[str, object] = {}
    env: dict[str, str] = {}
    keys_dir = settings.data_dir / KEYS_DIR
    if settings.encryption_keys is None:
        try:
            entry = load_or_create_key_file(keys_dir / "encryption.key")
        except CodecError as err:
            raise RuntimeError(f"payload encryption keys: {err}") from err
        key_id = entry.partition(":")[0]
        update.update(encryption_keys=SecretStr(entry), encryption_key_id=key_id)
        env.update(PODIUM_ENCRYPTION_KEYS=entry, PODIUM_ENCRYPTION_KEY_ID=key_id)
    if settings.codec_token is None:
        token = load_or_create_secret(keys_dir / "codec-token", lambda: secrets.token_urlsafe(32))
        update["codec_token"] = SecretStr(token)
        env["PODIUM_CODEC_TOKEN"] = token
    if update:
        log.info("dev_secrets_in_use", folder=str(keys_dir), variables=sorted(env))
    resolved = settings.model_copy(update=update)
    try:
        configured_key_ring(resolved)
    except CodecError as err:
        raise RuntimeError(f"payload encryption keys: {err}") from err
    return resolved, env


def codec_banner(
    settings: Settings, *, show_token: bool, trust_local_ui: bool = False
) -> list[str]:
    """`podium up`'s lines on the codec server; the token only when it is a development one."""
    url = codec_url(settings)
    token = (
        settings.codec_token.get_secret_value()
        if show_token and settings.codec_token is not None
        else "<PODIUM_CODEC_TOKEN>"
    )
    if trust_local_ui:
        ui = [
            "    Temporal UI: decodes on this machine as is (no token; other users are refused)",
        ]
    else:
        ui = [
            "    Temporal UI: Settings > Codec Server > 'Use my browser setting', endpoint",
            f"      {url}/t/{token}",
        ]
    return [
        f"  Codec server  {url}   (decrypts payloads for operators with the token)",
        *ui,
        f'    temporal CLI: --codec-endpoint {url} --codec-auth "Bearer {token}"',
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m starter.codec_server", description=__doc__)
    parser.add_argument(
        "--trust-local-ui",
        action="store_true",
        help="let the embedded Temporal UI (loopback, PODIUM_TEMPORAL_UI_PORT) decode without "
        "the token when the browser runs on this machine as this user (what `podium up` does)",
    )
    options = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = create_codec_app(settings, trust_local_ui=options.trust_local_ui)
    log.info(
        "codec_server_started",
        url=codec_url(settings),
        origins=allowed_origins(settings),
        trust_local_ui=options.trust_local_ui,
    )
    uvicorn.run(app, host=settings.codec_host, port=settings.codec_port, log_level="warning")


if __name__ == "__main__":
    main()
