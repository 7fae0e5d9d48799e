"""Connecting to Temporal: the embedded dev server by default, or what Temporal's env config names.

Temporal's own environment configuration decides where Podium connects: `TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS`, `TEMPORAL_TLS_CLIENT_CERT_PATH`,
`TEMPORAL_TLS_CLIENT_KEY_PATH`, `TEMPORAL_PROFILE` and the `temporal.toml` profile file. When no
address is configured, Podium uses the embedded dev server on `127.0.0.1:PODIUM_TEMPORAL_PORT`.

Every client gets Podium's data converter: pydantic payloads, encrypted by `core.codec` (failure
messages and stack traces and headers too), unless `PODIUM_ENCRYPTION=off`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.client import Client
from temporalio.common import HeaderCodecBehavior
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig

from core.admission import AdmissionInterceptor
from core.codec import EncryptionCodec, KeyRing, key_ring
from core.settings import Settings
from core.tracing import tracing_interceptors

__all__ = ["connect", "connect_config", "data_converter", "uses_external_temporal"]


def data_converter(
    source: Settings | KeyRing | None, *, mark_decrypted: bool = False
) -> DataConverter:
    """Pydantic payloads encrypted with the key ring; failure messages and stack traces move
    into an encoded attribute so they are encrypted too. Plain pydantic when there is no ring
    (`PODIUM_ENCRYPTION=off`); raises when encryption is on and no keys are configured.
    `mark_decrypted` (workers): decrypted payloads say so (`core.codec.DECRYPTED_METADATA`)."""
    ring = key_ring(source) if isinstance(source, Settings) else source
    if ring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(ring, mark_decrypted=mark_decrypted),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def connect_config(settings: Settings) -> dict[str, Any]:
    """`Client.connect` keyword arguments: Temporal's env config, else the embedded server."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    if not config.get("target_host"):
        config["target_host"] = f"127.0.0.1:{settings.temporal_port}"
    config.setdefault("namespace", "default")
    return config


def uses_external_temporal() -> bool:
    """True when Temporal's env config names a server, so Podium must not start its own."""
    return bool(ClientConfig.load_client_connect_config().get("target_host"))


async def connect(
    settings: Settings, *, worker: bool = False, role: str | None = None, **overrides: Any
) -> Client:
    """`worker`: the worker's client, whose codec marks what it decrypted. `role` names the
    process in traces (`core.tracing`; default `worker` or `client`)."""
    config: dict[str, Any] = {
        "data_converter": data_converter(settings, mark_decrypted=worker),
        # Headers (interceptors' context) are history too: through the codec as well.
        "header_codec_behavior": HeaderCodecBehavior.CODEC,
        # Decision updates a busy case defers are sent again (`core.admission`); traces when
        # the OTEL_* variables ask for them (`core.tracing`; the worker inherits them).
        "interceptors": [
            AdmissionInterceptor(),
            *tracing_interceptors(role or ("worker" if worker else "client")),
        ],
        **connect_config(settings),
    }
    config.update(overrides)
    return await Client.connect(**config)
