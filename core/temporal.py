"""Connecting to Temporal: the embedded dev server by default, or what Temporal's env config names.

Temporal's own environment configuration decides where Podium connects: `TEMPORAL_ADDRESS`,
`TEMPORAL_NAMESPACE`, `TEMPORAL_API_KEY`, `TEMPORAL_TLS`, `TEMPORAL_TLS_CLIENT_CERT_PATH`,
`TEMPORAL_TLS_CLIENT_KEY_PATH`, `TEMPORAL_PROFILE` and the `temporal.toml` profile file. When no
address is configured, Podium uses the embedded dev server on `127.0.0.1:PODIUM_TEMPORAL_PORT`.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig

from core.settings import Settings

__all__ = ["connect", "connect_config", "uses_external_temporal"]


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


async def connect(settings: Settings, **overrides: Any) -> Client:
    config = connect_config(settings)
    config.update(overrides)
    return await Client.connect(data_converter=pydantic_data_converter, **config)
