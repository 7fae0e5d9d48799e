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
  OIDC login, over HTTPS; for the embedded UI, the token goes into the endpoint's path instead,
  `http://127.0.0.1:8234/t/<token>`, which the protocol allows (an endpoint may live at any
  path; only the final segment names the operation). Anything else gets 401 problem+json.
- CORS: browsers may call it only from the Temporal UI's origins (`PODIUM_CODEC_CORS_ORIGINS`,
  default the embedded UI on localhost and 127.0.0.1); preflights from other origins are refused.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Sequence
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
    "allowed_origins",
    "codec_banner",
    "codec_url",
    "create_app",
    "create_codec_app",
    "dev_secrets",
    "main",
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


def create_app(codec: PayloadCodec, token: str, origins: Sequence[str]) -> Starlette:
    """The codec server for `codec`, open to callers presenting `token`, browsers at `origins`."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the codec token must be at least {MIN_TOKEN_LENGTH} characters")
    expected = token.encode()

    async def handle(request: Request) -> Response:
        operation = request.url.path.rsplit("/", 1)[-1]
        namespace = request.headers.get("x-namespace", "")
        instance = f"/{operation}"  # never echo a path that holds the token
        presented = _presented_token(request)
        if presented is None or not hmac.compare_digest(presented.encode(), expected):
            log.warning(
                "codec_request_refused",
                operation=operation,
                namespace=namespace,
                reason="no token" if presented is None else "wrong token",
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


def create_codec_app(settings: Settings) -> Starlette:
    """The codec server configured by `settings`; refuses to build without keys or a token."""
    ring = configured_key_ring(settings)
    if ring is None:
        raise ValueError("PODIUM_ENCRYPTION=off: there is nothing for a codec server to decode")
    if settings.codec_token is None:
        raise ValueError("set PODIUM_CODEC_TOKEN: the codec server does not run unauthenticated")
    return create_app(
        EncryptionCodec(ring), settings.codec_token.get_secret_value(), allowed_origins(settings)
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


def codec_banner(settings: Settings, *, show_token: bool) -> list[str]:
    """`podium up`'s lines on the codec server; the token only when it is a development one."""
    url = codec_url(settings)
    token = (
        settings.codec_token.get_secret_value()
        if show_token and settings.codec_token is not None
        else "<PODIUM_CODEC_TOKEN>"
    )
    return [
        f"  Codec server  {url}   (decrypts payloads for operators with the token)",
        "    Temporal UI: Settings > Codec Server > 'Use my browser setting', endpoint",
        f"      {url}/t/{token}",
        f'    temporal CLI: --codec-endpoint {url} --codec-auth "Bearer {token}"',
    ]


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    app = create_codec_app(settings)
    log.info("codec_server_started", url=codec_url(settings), origins=allowed_origins(settings))
    uvicorn.run(app, host=settings.codec_host, port=settings.codec_port, log_level="warning")


if __name__ == "__main__":
    main()
