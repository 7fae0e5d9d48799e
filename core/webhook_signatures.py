"""Signed webhooks: an upstream (the carrier) signs each webhook body with a shared secret.

Header `Podium-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>` (the scheme
Stripe and others use). `verify` checks the MAC in constant time and refuses a timestamp more
than `tolerance` seconds away from now, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["SIGNATURE_HEADER", "InvalidSignature", "sign", "verify"]

SIGNATURE_HEADER = "Podium-Signature"
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(ValueError):
    """The webhook is not signed with the shared secret, or too old."""


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The signature header's value for `body`."""
    if not secret:
        raise ValueError("a webhook secret is required to sign")
    when = int(time.time()) if timestamp is None else timestamp
    return f"t={when},v1={_mac(secret, when, body)}"


def verify(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """The signed timestamp when `header` signs `body` with `secret`; `InvalidSignature` else."""
    if not secret:
        raise InvalidSignature("no webhook secret is configured")
    if not header:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("the signature has no timestamp") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignature("the signature's timestamp is outside the tolerance")
    expected = _mac(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise InvalidSignature("the signature does not match")
    return timestamp
