"""Page content is data: nothing a site publishes may steer the user's terminal."""

from __future__ import annotations

import re

from storage.escapes import ESCAPES

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: object, *, keep_newlines: bool = False) -> str:
    """Strip escape sequences and control characters (bidi overrides too) before printing."""
    value = "" if text is None else str(text)
    value = ESCAPES.sub("", value)
    if not keep_newlines:
        value = value.replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub("", value)
