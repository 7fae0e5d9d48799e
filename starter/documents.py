"""Documents the API receives (receipt photos): checked, then stored before any case refers to
them, so a case carries only the document's id and its history never holds the image.

`AttachmentUpload` is the JSON shape of an upload (`{content_type, data_base64}`) and checks it
while the request is parsed: valid base64, not empty, at most 10 MB once decoded, and a PNG or
JPEG by its magic bytes (matching the declared type). `DocumentUploads` stores it in the
`documents` table of the settings' database (`Settings.resolved_database_url`), on an engine
built on first use, the blocking work in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import threading
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from sqlalchemy.engine import Engine

from activities.documents import DOCUMENT_ID_PATTERN, DocumentStore, sniff_image_type
from core.db import create_tables, make_engine
from core.settings import Settings

__all__ = [
    "DOCUMENT_ID_PATTERN",
    "MAX_ATTACHMENT_BYTES",
    "AttachmentUpload",
    "DocumentRef",
    "DocumentUploads",
]

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# Base64 of the largest upload, with room for line breaks: longer text is refused unread.
_MAX_BASE64_CHARS = (MAX_ATTACHMENT_BYTES + 2) // 3 * 4 + 256 * 1024


def _decode(data_base64: str) -> bytes:
    try:
        return base64.b64decode("".join(data_base64.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64") from None


class AttachmentUpload(BaseModel):
    """An image sent inline as base64: a receipt or an invoice, PNG or JPEG, up to 10 MB."""

    content_type: Literal["image/png", "image/jpeg"] = Field(examples=["image/png"])
    data_base64: str = Field(
        min_length=1,
        max_length=_MAX_BASE64_CHARS,
        repr=False,
        description="The file's bytes, base64 (standard alphabet; line breaks are ignored)",
    )

    @field_validator("data_base64")
    @classmethod
    def _an_image_of_its_type(cls, value: str, info: ValidationInfo) -> str:
        data = _decode(value)
        if not data:
            raise ValueError("the attachment is empty")
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValueError(
                f"the attachment is {len(data) / 1_048_576:.1f} MB; "
                f"the limit is {MAX_ATTACHMENT_BYTES // 1_048_576} MB"
            )
        sniffed = sniff_image_type(data)
        if sniffed is None:
            raise ValueError("the attachment is not a PNG or JPEG image")
        declared = info.data.get("content_type")
        if declared is not None and sniffed != declared:
            raise ValueError(f"the attachment is {sniffed}, not {declared}")
        return value

    @cached_property
    def data(self) -> bytes:
        return _decode(self.data_base64)

    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class DocumentRef(BaseModel):
    document_id: str = Field(examples=["doc-3f2a9c0d4b6e4f1a8c7d5e9b0a1c2d3e"])
    sha256: str
    content_type: str
    size_bytes: int
    created: bool = Field(description="False when the same bytes had been stored before")


class DocumentUploads:
    """The API's access to the document store. Safe to share across tasks."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.resolved_database_url
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._store: DocumentStore | None = None

    def _documents(self) -> DocumentStore:
        with self._lock:
            if self._store is None:
                self._engine = make_engine(self._url)
                create_tables(self._engine)  # the API may store a document before a worker ran
                self._store = DocumentStore(self._engine)
            return self._store

    async def save(self, upload: AttachmentUpload) -> DocumentRef:
        stored = await asyncio.to_thread(
            lambda: self._documents().put(upload.data, upload.content_type)
        )
        return DocumentRef(
            document_id=stored.document_id,
            sha256=stored.sha256,
            content_type=stored.content_type,
            size_bytes=stored.size,
            created=stored.created,
        )

    async def exists(self, document_id: str) -> bool:
        return await asyncio.to_thread(lambda: self._documents().exists(document_id))

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
            self._engine = self._store = None
