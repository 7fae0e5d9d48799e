"""Documents as requests carry them: an inline image upload and a stored document's id.

`AttachmentUpload` is the JSON shape of an upload (`{content_type, data_base64}`) and checks it
while the request is parsed: valid base64, not empty, at most 10 MB once decoded, and a PNG or
JPEG by its magic bytes (matching the declared type). Pure pydantic that imports nothing of
Podium's: process request models, the document store and the API share it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from functools import cached_property
from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator

__all__ = [
    "DOCUMENT_ID_PATTERN",
    "IMAGE_TYPES",
    "MAX_ATTACHMENT_BYTES",
    "AttachmentUpload",
    "sniff_image_type",
]

DOCUMENT_ID_PATTERN = r"^doc-[0-9a-f]{32}$"
# What the bytes must start with, per accepted content type (checked, never trusted).
IMAGE_TYPES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
}


def sniff_image_type(data: bytes) -> str | None:
    """`image/png` or `image/jpeg` from the file's magic bytes; None for anything else."""
    for content_type, signatures in IMAGE_TYPES.items():
        if any(data.startswith(signature) for signature in signatures):
            return content_type
    return None


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
