"""The service's own state on its compacted state topic: verdicts in force (with their rate windows and held
alerts) and the page budget. One record per key, written in the same transaction as the incidents; restore
reads the topic to its end and applies the latest record of each key.

Keys: ``rule:<incident id>`` (a verdict; a tombstone once it expired), ``budget`` and ``baseline:<digest>`` (a
kind's learned alert rate, ``incidents.baselines``; a tombstone once forgotten). Every record carries
``schema``; a record this version cannot read raises ``ValueError`` (or ``KeyError``/``TypeError``) and the
caller skips and counts it: a bad state record never stops the service from starting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Message

from core import jsondoc
from incidents.baselines import KindRate, kind_key
from incidents.book import Incident, IncidentBook
from incidents.verdicts import Rule

STATE_SCHEMA = "kdd-incident-state/1"
BUDGET_KEY = "budget"
RULE_PREFIX = "rule:"
BASELINE_PREFIX = "baseline:"
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


def baseline_records(book: IncidentBook) -> list[tuple[str, bytes | None]]:
    """(key, value) for each kind whose learned rate changed since the last call and a tombstone for each kind
    forgotten: what the next transaction must carry for a restart to continue exactly."""
    changed, gone = book.baselines.take_changes()
    return [*((kind_key(r.kind), encode({"schema": STATE_SCHEMA, "type": "baseline", "baseline": r.to_dict()}))
              for r in changed),
            *((key, None) for key in gone)]


def apply(book: IncidentBook, value: bytes) -> None:
    """Apply one state record to a book being restored; raises on a record of another shape."""
    doc = jsondoc.loads(value)
    if not isinstance(doc, dict) or doc.get("schema") != STATE_SCHEMA:
        raise ValueError(f"not a {STATE_SCHEMA} record")
    if doc["type"] == "rule":
        book.restore_rule(Rule.from_dict(doc["rule"]))
    elif doc["type"] == "budget":
        book.budget.restore(doc["budget"])
    elif doc["type"] == "baseline":
        book.baselines.restore_kind(KindRate.from_dict(doc["baseline"]))
    else:
        raise ValueError(f"unknown state record type {doc['type']!r}")


def restore(book: IncidentBook, incident_topic: str, incident_records: Iterable[Message], state_topic: str,
            state_records: Iterable[Message], bad: Callable[[str, Message, Exception], None]) -> None:
    """Rebuild ``book`` from its two compacted topics read to their end: incidents, then verdicts in force and the
    budget. Compaction is lazy, so a key can appear several times: the latest record wins, and a tombstone after
    an earlier record removes what that record restored (a pruned incident, an expired verdict). A record this
    version cannot read is handed to ``bad`` (logged and counted) and skipped."""
    for msg in incident_records:
        if msg.value() is None:
            book.forget((msg.key() or b"").decode("utf-8", "replace"))
            continue
        try:
            book.restore(Incident.from_dict(jsondoc.loads(msg.value())))
        except BAD_STATE as exc:
            bad(incident_topic, msg, exc)
    for msg in state_records:
        key = (msg.key() or b"").decode("utf-8", "replace")
        if msg.value() is None:
            if key.startswith(RULE_PREFIX):
                book.rules.pop(key[len(RULE_PREFIX):], None)
            elif key.startswith(BASELINE_PREFIX):
                book.baselines.forget_key(key)
            continue
        try:
            apply(book, msg.value())
        except BAD_STATE as exc:
            bad(state_topic, msg, exc)


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
                out[rule_id] = Rule.from_dict(jsondoc.loads(value)["rule"]).audit()
            except BAD_STATE:
                continue
    return out


def encode(doc: dict[str, Any]) -> bytes:
    """A state, incident, suppressed-alert or OCSF record as written: bounded by the one output rule
    (``core.jsondoc.bound``), so no field a hostile alert filled can make it too large for the broker."""
    return jsondoc.dumps(doc)
