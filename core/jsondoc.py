"""JSON in and out of every service, safe by construction: text that always encodes, outputs bounded by one rule.

Input. ``json.loads`` accepts lone UTF-16 surrogates (``"\\ud800"`` escapes, or raw surrogate bytes, which it
decodes with ``surrogatepass``): a Python ``str`` that then raises ``UnicodeEncodeError`` wherever it is encoded
later (a signature hash, a record key, a header, a page). Issue 31 found one crash-looping the incident service.
:func:`loads` replaces every lone surrogate, in values and keys, with U+FFFD as the document is read, so no text
that came from outside can fail to encode anywhere downstream; it raises ``ValueError`` (``RecursionError`` for a
deeply nested document included) for anything that is not JSON, so callers catch one exception type.

Output. Every document a service writes goes through :func:`bound` (and :func:`dumps`): one rule for every field
of every output, instead of a cap per field that the next new field forgets. Strings are cut to ``MAX_TEXT``
characters, containers to ``MAX_ITEMS`` entries, nesting to ``MAX_DEPTH``, integers clamped to 64 bits,
non-finite floats written as null, and the whole document to a character budget (``MAX_DOC_CHARS``) spent in
document order: past it strings are cut short and containers stop growing. A document is therefore never
larger than the budget plus its structure, whatever a hostile input put into it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_TEXT = 1024  # characters of one string
MAX_ITEMS = 1024  # entries of one list or object
MAX_DEPTH = 12  # nesting of containers; deeper ones are written as null
MAX_DOC_CHARS = 256 * 1024  # characters of strings and numbers in one document
INT_LIMIT = 2**63 - 1
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (the common case costs one encode)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _clean(doc: Any) -> Any:
    if isinstance(doc, str):
        return clean_text(doc)
    if isinstance(doc, list):
        return [_clean(v) for v in doc]
    if isinstance(doc, dict):
        return {clean_text(k): _clean(v) for k, v in doc.items()}
    return doc


def loads(raw: bytes | str | None) -> Any:
    """A JSON document with no lone surrogates in it; ``ValueError`` for anything else (empty, not JSON, not
    UTF-8, nested too deep)."""
    if raw is None:
        raise ValueError("no value (a null record)")
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    probe = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    return _clean(doc) if _SURROGATE.search(probe) else doc


def key_bytes(key: Any, limit: int = 256) -> bytes | None:
    """A record key from any text: encodable, at most ``limit`` bytes; None stays None."""
    if key is None:
        return None
    return clean_text(str(key)).encode("utf-8")[:limit]


class _Budget:
    def __init__(self, chars: int) -> None:
        self.left = chars

    def text(self, value: str) -> str:
        value = clean_text(value[: min(MAX_TEXT, max(0, self.left))])
        self.left -= len(value) + 2
        return value


def bound(doc: Any, max_chars: int = MAX_DOC_CHARS) -> Any:
    """``doc`` as a service may write it (see the module docstring): bounded in every field and in total."""
    return _bound(doc, _Budget(max_chars), 0)


def _bound(value: Any, budget: _Budget, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return budget.text(value)
    if isinstance(value, int):
        budget.left -= 20
        return max(-INT_LIMIT, min(INT_LIMIT, value))
    if isinstance(value, float):
        budget.left -= 24
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return None
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if len(out) >= MAX_ITEMS or budget.left <= 0:
                break
            out[budget.text(str(k))] = _bound(v, budget, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for v in value:
            if len(items) >= MAX_ITEMS or budget.left <= 0:
                break
            items.append(_bound(v, budget, depth + 1))
        return items
    return budget.text(str(value))


def dumps(doc: Any, max_chars: int = MAX_DOC_CHARS) -> bytes:
    """``doc`` bounded (:func:`bound`) and encoded compactly as UTF-8 JSON (never raises on its content)."""
    return json.dumps(bound(doc, max_chars), separators=(",", ":"), allow_nan=False).encode()
