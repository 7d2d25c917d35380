"""The service's own state on its compacted state topic: verdicts in force (with their rate windows and held
alerts) and the page budget. One record per key, written in the same transaction as the incidents; restore
reads the topic to its end and applies the latest record of each key.

Keys: ``rule:<incident id>`` (a verdict; a tombstone once it expired) and ``budget``. Every record carries
``schema``; a record this version cannot read raises ``ValueError`` (or ``KeyError``/``TypeError``) and the
caller skips and counts it: a bad state record never stops the service from starting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from incidents.book import IncidentBook
from incidents.verdicts import Rule

STATE_SCHEMA = "kdd-incident-state/1"
BUDGET_KEY = "budget"
RULE_PREFIX = "rule:"
# what reading a forged or foreign state record can raise (int(1e400) is an OverflowError): skipped and counted
BAD_STATE = (ValueError, LookupError, TypeError, AttributeError, RecursionError, OverflowError)


def rule_key(rule_id: str) -> str:
    return f"{RULE_PREFIX}{rule_id}"


def rule_record(book: IncidentBook, rule_id: str) -> tuple[str, bytes | None]:
    """(key, value) for a verdict's state: a tombstone when it is no longer in force."""
    rule = book.rules.get(rule_id)
    if rule is None:
        return rule_key(rule_id), None
    return rule_key(rule_id), encode({"schema": STATE_SCHEMA, "type": "rule", "rule": rule.to_dict()})


def budget_record(book: IncidentBook) -> tuple[str, bytes]:
    return BUDGET_KEY, encode({"schema": STATE_SCHEMA, "type": "budget", "budget": book.budget.to_dict()})


def apply(book: IncidentBook, value: bytes) -> None:
    """Apply one state record to a book being restored; raises on a record of another shape."""
    doc = json.loads(value)
    if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
        raise ValueError(f"not a {STATE_SCHEMA} record")
    if doc["type"] == "rule":
        book.restore_rule(Rule.from_dict(doc["rule"]))
    elif doc["type"] == "budget":
        book.budget.restore(doc["budget"])
    else:
        raise ValueError(f"unknown state record type {doc['type']!r}")


def verdicts_in_force(records: Iterable[tuple[bytes | None, bytes | None]]) -> dict[str, dict[str, Any]]:
    """Incident id -> who marked it benign, when, why and what the verdict covers, for every verdict the state
    topic's (key, value) records say is in force (the latest record per key wins; a tombstone ends it). For
    listings: a record this version cannot read is left out, as restore skips it."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in records:
        name = (key or b"").decode("utf-8", "replace")
        if not name.startswith(RULE_PREFIX):
            continue
        rule_id = name[len(RULE_PREFIX):]
        out.pop(rule_id, None)
        if value is not None:
            try:
                out[rule_id] = Rule.from_dict(json.loads(value)["rule"]).audit()
            except BAD_STATE:
                continue
    return out


def encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()
