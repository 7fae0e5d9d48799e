"""Payload encryption: AES-256-GCM on every payload Podium puts in Temporal history.

An encrypted payload looks like this in history:

    metadata  encoding = "binary/encrypted", encryption-key-id = <kid>
    data      nonce (12 random bytes) || AES-256-GCM ciphertext and tag

The plaintext is the whole original `Payload` (metadata and data, serialized), so the Temporal
server and anyone reading history sees neither the value nor its type. The key id is bound as
associated data: relabelling a payload with another key id makes it fail authentication.

Keys come from a key ring, `kid:base64key` entries separated by commas
(`PODIUM_ENCRYPTION_KEYS`); the active key (`PODIUM_ENCRYPTION_KEY_ID`) encrypts, every key in
the ring decrypts. Rotation: add the new key, make it active, and keep the old one for as long
as any history encrypted with it can still be read (retention, replays, running cases).

Payloads without the `binary/encrypted` encoding decode untouched: histories recorded before
encryption was switched on keep replaying and keep being readable.

This module runs outside the workflow sandbox, in the clients' data converter (worker, starter,
API) and in the codec server. Workflow code never imports it (`cryptography` breaks there).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.settings import Settings

__all__ = [
    "DECRYPTED_METADATA",
    "ENCODING",
    "KEY_ID_METADATA",
    "CodecError",
    "DecryptionError",
    "EncryptionCodec",
    "EncryptionNotConfiguredError",
    "KeyRing",
    "KeyRingError",
    "UnknownKeyError",
    "key_ring",
    "load_or_create_key_file",
    "load_or_create_secret",
    "new_key_entry",
]

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
# Set by a marking codec on what it decrypted, so a workflow can tell an encrypted message from
# one sent in clear (approval decisions must arrive encrypted); stripped from clear payloads.
DECRYPTED_METADATA = "podium-decrypted"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32  # AES-256
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CodecError(ValueError):
    """A payload cannot be encrypted or decrypted, or the key ring is unusable."""


class KeyRingError(CodecError):
    """The configured key ring is malformed. Messages name key ids, never key material."""


class EncryptionNotConfiguredError(KeyRingError):
    def __init__(self) -> None:
        super().__init__(
            "payload encryption is on but no keys are configured: set PODIUM_ENCRYPTION_KEYS "
            "to 'kid:base64key' (a random 32-byte key) and PODIUM_ENCRYPTION_KEY_ID to its kid, "
            "or PODIUM_ENCRYPTION=off to store payloads in Temporal history unencrypted"
        )


class UnknownKeyError(CodecError):
    """A payload was encrypted with a key id that is not in the ring."""

    def __init__(self, key_id: str, known: Sequence[str]) -> None:
        self.key_id = key_id
        super().__init__(
            f"payload is encrypted with key id {key_id!r}, which is not in the key ring "
            f"(known ids: {', '.join(sorted(known))}); add that key to PODIUM_ENCRYPTION_KEYS"
        )


class DecryptionError(CodecError):
    """An encrypted payload failed authentication: tampered with, truncated or a wrong key."""


class KeyRing:
    """Keys by id, and the id of the one that encrypts. Its repr shows ids only."""

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if not keys:
            raise KeyRingError("the key ring is empty")
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise KeyRingError(f"invalid key id {key_id!r}: use 1-64 of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_SIZE:
                raise KeyRingError(f"key {key_id!r} must be {KEY_SIZE} bytes (AES-256)")
        if active_key_id not in keys:
            raise KeyRingError(f"the active key id {active_key_id!r} is not in the key ring")
        self._keys = dict(keys)
        self.active_key_id = active_key_id

    @classmethod
    def parse(cls, entries: str, active_key_id: str | None = None) -> KeyRing:
        """`kid:base64key[,kid:base64key...]`; without an active id, the ring needs one key."""
        keys: dict[str, bytes] = {}
        for raw in entries.split(","):
            entry = raw.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                raise KeyRingError("each key ring entry must be 'kid:base64key'")
            if key_id in keys:
                raise KeyRingError(f"key id {key_id!r} appears twice in the key ring")
            keys[key_id] = _b64decode(key_id, encoded.strip())
        if not keys:
            raise KeyRingError("the key ring is empty")
        if active_key_id is None:
            if len(keys) != 1:
                raise KeyRingError(
                    "the key ring holds several keys: set PODIUM_ENCRYPTION_KEY_ID to the one "
                    "that encrypts"
                )
            active_key_id = next(iter(keys))
        return cls(keys, active_key_id)

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise UnknownKeyError(key_id, list(self._keys)) from None

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={self.key_ids!r}, active_key_id={self.active_key_id!r})"


def _b64decode(key_id: str, encoded: str) -> bytes:
    try:
        altchars = b"-_" if "-" in encoded or "_" in encoded else None  # URL-safe alphabet
        return base64.b64decode(encoded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(f"key {key_id!r} is not valid base64") from None


def key_ring(settings: Settings) -> KeyRing | None:
    """The configured ring; None when `PODIUM_ENCRYPTION=off`. Raises when on without keys."""
    if settings.encryption == "off":
        return None
    if settings.encryption_keys is None or not settings.encryption_keys.get_secret_value():
        raise EncryptionNotConfiguredError()
    return KeyRing.parse(settings.encryption_keys.get_secret_value(), settings.encryption_key_id)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM with the ring's active key; decodes with whichever key a payload names.

    `mark_decrypted` (the worker's): decoded payloads that were encrypted carry
    `DECRYPTED_METADATA`; payloads that arrived in clear never do, whatever their sender wrote.
    """

    def __init__(self, ring: KeyRing, *, mark_decrypted: bool = False) -> None:
        self.ring = ring
        self._mark = mark_decrypted
        self._ciphers = {key_id: AESGCM(ring.key(key_id)) for key_id in ring.key_ids}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.ring.active_key_id
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if DECRYPTED_METADATA in payload.metadata:
                # Sent in clear with the mark forged: drop it.
                payload = Payload(
                    metadata={k: v for k, v in payload.metadata.items() if k != DECRYPTED_METADATA},
                    data=payload.data,
                )
            return payload  # never encrypted: pass through untouched
        raw_id = payload.metadata.get(KEY_ID_METADATA)
        if not raw_id:
            raise DecryptionError(f"encrypted payload without the {KEY_ID_METADATA!r} metadata")
        key_id = raw_id.decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UnknownKeyError(key_id, self.ring.key_ids)
        data = payload.data
        if len(data) < NONCE_SIZE + TAG_SIZE:
            raise DecryptionError(f"payload encrypted with key id {key_id!r} is truncated")
        try:
            plain = cipher.decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"payload encrypted with key id {key_id!r} failed authentication "
                "(tampered with, truncated, or encrypted with a different key of that id)"
            ) from None
        original = Payload()
        original.ParseFromString(plain)
        if self._mark:
            original.metadata[DECRYPTED_METADATA] = b"1"
        return original


def new_key_entry(key_id: str) -> str:
    """A fresh key ring entry, `kid:base64key`, for a random 256-bit key."""
    if not _KEY_ID.match(key_id):
        raise KeyRingError(f"invalid key id {key_id!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    return f"{key_id}:{base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode()}"


def load_or_create_secret(path: Path, create: Callable[[], str]) -> str:
    """The secret kept in `path`, made by `create` the first time (file 0600, folder 0700)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # created concurrently: read theirs
        else:
            with os.fdopen(fd, "w") as file:
                file.write(create() + "\n")
    return path.read_text().strip()


def load_or_create_key_file(path: Path) -> str:
    """The development key ring entry kept in `path`, a random key created once."""
    entry = load_or_create_secret(path, lambda: new_key_entry(f"dev-{secrets.token_hex(4)}"))
    try:
        KeyRing.parse(entry)  # fail here, naming the file, rather than in every process
    except KeyRingError as err:
        raise KeyRingError(f"{path}: {err}") from None
    return entry
