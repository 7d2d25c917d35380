"""Analysts' verdicts: ``python -m incidents feedback --incident ID`` marks an incident benign;
``python -m incidents verdicts`` lists every verdict with who, when, why and what became of it.

A verdict goes to the feedback topic (keyed by incident id, on the partition the id names, ``core.routing``:
the one whose book holds the incident). The incident service turns it into a rule that
suppresses later alerts of the incident's kind, no more severe than it ever was and no faster than it ran
(times a margin), until the verdict expires: muted alerts go to the suppressed topic and are counted, never
dropped, and a flood of the kind is filed regardless (``incidents.verdicts``). Whoever may write the feedback
topic may mute alerts: grant that ACL to analysts only.
"""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

from confluent_kafka import Producer
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from core import jsondoc, timebounds
from core.acl import Grant, require, topic
from core.kafka import KafkaSettings, check_connection
from core.kafka_io import read_to_end
from core.routing import incident_partition
from core.settings import Settings
from incidents import state
from incidents.verdicts import BENIGN, REVOKE


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


class _FeedbackClient(Settings):
    """What both feedback commands need: the cluster and the feedback topic."""

    model_config = SettingsConfigDict(env_prefix="FEEDBACK_")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    feedback_topic: str = Field("kdd-feedback", min_length=1, description="the incident service's feedback topic")


class FeedbackSettings(_FeedbackClient):
    """Mark an incident benign: matching alerts are suppressed (kept and counted) for a while."""

    incident: str = Field(..., min_length=1, max_length=200, description="the incident id (from the incident topic)")
    for_s: float = Field(86_400.0, gt=0, le=86_400 * 30, description="how long the verdict suppresses alerts (the "
                         "service also caps it: --max-verdict-s)")
    analyst: str = Field(default_factory=_user, min_length=1, max_length=200,
                         description="who decided (kept with the verdict; default: the login name)")
    note: str = Field("", max_length=500, description="why (kept with the verdict)")
    revoke: bool = Field(False, description="take back the benign verdict on the incident instead: its alerts are "
                         "filed again from now on (the revocation is kept on the feedback topic, with who and why)")

    def acls(self) -> list[Grant]:
        """Writing the feedback topic is the power to mute alerts (for a bounded rate and time): grant it to the
        analysts' principals only (``core.acl``)."""
        return [topic(self.feedback_topic, "WRITE", "a verdict (the power to mute alerts: analysts only)")]


class VerdictListSettings(_FeedbackClient):
    """List every verdict on the feedback topic: who, when, why, until when, and whether it is in force."""

    state_topic: str = Field("kdd-incidents.state", min_length=1,
                             description="the incident service's state topic (which verdicts are in force)")
    json_lines: bool = Field(False, description="one JSON document per verdict instead of a table")

    def acls(self) -> list[Grant]:
        """Reading verdicts and which are in force (``core.acl``)."""
        return [topic(self.feedback_topic, "READ", "every verdict given"),
                topic(self.state_topic, "READ", "which verdicts are in force")]


def verdict_producer(s: FeedbackSettings) -> Producer:
    """A producer for verdicts, once the cluster answered (exit 3 otherwise, via KafkaConnectError)."""
    conf = s.kafka.client_config()
    check_connection(conf, s.kafka.connect_timeout_s)
    require(conf, s.acls(), "a verdict")
    return verdict_writer(conf)


def verdict_writer(conf: dict[str, Any]) -> Producer:
    """The producer verdicts are written with (idempotent, all replicas): the CLI's and the console's."""
    return Producer({**conf, "enable.idempotence": True, "acks": "all"})


def send(s: FeedbackSettings, producer: Producer | None = None) -> dict[str, object]:
    """Write one verdict and wait until the broker has it; ``producer`` lets a caller send many over one."""
    now_ms = int(time.time() * 1000)
    verdict = {"incident_id": s.incident, "verdict": REVOKE if s.revoke else BENIGN,
               "until_ms": now_ms + int(s.for_s * 1000), "decided_ms": now_ms, "analyst": s.analyst, "note": s.note}
    producer = producer or verdict_producer(s)
    errors: list[str] = []
    # to the partition its id names: the one whose book holds the incident (core.routing)
    partition = incident_partition(s.incident)
    producer.produce(s.feedback_topic, key=s.incident.encode(), value=json.dumps(verdict).encode(),
                     on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
                     **({} if partition is None else {"partition": partition}))
    if producer.flush(30) or errors:
        raise RuntimeError(f"the verdict was not delivered to {s.feedback_topic}: {errors or 'timed out'}")
    return verdict


def verdicts(s: VerdictListSettings) -> list[dict[str, Any]]:
    """Every verdict sent, oldest first, with the state the service keeps for the ones in force."""
    conf = s.kafka.client_config()
    check_connection(conf, s.kafka.connect_timeout_s)
    require(conf, s.acls(), "listing verdicts")
    in_force = state.verdicts_in_force((m.key(), m.value()) for m in read_to_end(conf, s.state_topic))
    now_ms = int(time.time() * 1000)
    out = []
    docs: list[tuple[int, dict[str, Any] | None]] = []
    for msg in read_to_end(conf, s.feedback_topic):
        try:
            doc = jsondoc.loads(msg.value() or b"")
            docs.append((msg.offset(), doc if isinstance(doc, dict) else None))
        except ValueError:
            docs.append((msg.offset(), None))
    revoked = {str(d.get("incident_id")): d for _, d in docs if d is not None and d.get("verdict") == REVOKE}
    for offset, doc in docs:
        if doc is None:
            out.append({"offset": offset, "status": "unreadable"})
            continue
        rule = in_force.get(str(doc.get("incident_id")))
        revocation = revoked.get(str(doc.get("incident_id")))
        if doc.get("verdict") == REVOKE:
            status = "revocation"
        elif revocation is not None and rule is None:
            status = f"revoked by {str(revocation.get('analyst'))[:60]}"
        elif rule is not None and rule.get("decided_ms") == doc.get("decided_ms"):
            status = "in force"
        elif isinstance(doc.get("until_ms"), int | float) and doc["until_ms"] < now_ms:
            status = "expired"
        else:
            status = "not in force (superseded, refused or not yet read: see the service's log)"
        row = {"offset": offset, "incident_id": doc.get("incident_id"), "analyst": doc.get("analyst"),
               "decided": _iso(doc.get("decided_ms")), "until": _iso(doc.get("until_ms")), "note": doc.get("note"),
               "status": status}
        if status == "in force" and rule is not None:
            row |= {"covers": {"kind": rule["kind"], "max_severity": rule["max_severity"],
                               "alerts_per_minute": rule["allowance"]},
                    "suppressed": rule["suppressed"], "broke_through": rule["broke_through"]}
        out.append(row)
    return out


def _iso(ms: Any) -> str | None:
    """A verdict time for the listing; "invalid" for a time outside the accepted range (``core.timebounds``)."""
    if ms is None:
        return None
    text = timebounds.iso(ms)
    return text[:19] + "Z" if text is not None else "invalid"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'decided':25} {'until':25} {'analyst':14} {'status':10} incident / note / what it covers"]
    for r in rows:
        if r["status"] == "unreadable":
            lines.append(f"(offset {r['offset']}: unreadable)")
            continue
        covers = (f" | covers {'/'.join(r['covers']['kind'])} up to severity {r['covers']['max_severity']:.3g}, "
                  f"{r['covers']['alerts_per_minute']}/min; suppressed {r['suppressed']}, broke through "
                  f"{r['broke_through']}") if "covers" in r else ""
        lines.append(f"{r['decided'] or '?':25} {r['until'] or '?':25} {str(r['analyst'])[:14]:14} "
                     f"{r['status'][:10]:10} {r['incident_id']} | {r['note'] or ''}{covers}")
    return "\n".join(lines)
