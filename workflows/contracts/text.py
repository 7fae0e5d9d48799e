"""Text a person writes, as request models accept it: at least one visible character, no control
characters but tab and line breaks (`VisibleText`).

`strip_whitespace` alone lets through a lone NUL, an escape sequence or zero-width spaces: text
that says nothing, and which some stores refuse (PostgreSQL `text` cannot hold NUL). Every
free-text field of a request is a `VisibleText` with its own limits:

    message: Annotated[VisibleText, text_limits(5_000)]
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

__all__ = ["VisibleText", "text_limits", "visible_text"]

# Tab, line feed and carriage return are text; every other C0/C1 control character is refused.
_ALLOWED_CONTROLS = frozenset("\t\n\r")
# Unicode categories that show nothing: controls, format characters (zero-width spaces,
# direction marks), surrogates and separators (spaces, line and paragraph breaks).
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp"})


def visible_text(value: str) -> str:
    """`value` if it has a visible character and no control character but tab and line breaks;
    ValueError (pydantic's validation error) otherwise."""
    for char in value:
        if unicodedata.category(char) == "Cc" and char not in _ALLOWED_CONTROLS:
            raise ValueError(f"control character U+{ord(char):04X} is not allowed in text")
    if all(unicodedata.category(char) in _INVISIBLE for char in value):
        raise ValueError("text needs at least one visible character")
    return value


def text_limits(max_length: int) -> StringConstraints:
    """Stripped of surrounding whitespace, then 1 to `max_length` characters."""
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_length)


# The shared type; each field adds its own limits: `Annotated[VisibleText, text_limits(64)]`.
VisibleText = Annotated[str, AfterValidator(visible_text)]
