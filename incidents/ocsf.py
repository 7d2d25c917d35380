"""Alerts and incidents as OCSF findings, for SIEMs and data lakes that ingest the Open Cybersecurity Schema
Framework (OpenSearch Security Analytics, Splunk, Elastic, AWS Security Lake) without a converter of their own.

OCSF 1.1.0: the version AWS Security Lake ingests from custom sources, and the first with both classes used
here, Detection Finding (2004: one per alert) and Incident Finding (2005: one per change of an incident). The
JSON Schemas of the two classes are vendored in ``incidents/ocsf_schema/`` (generated from the OCSF 1.1.0
schema, Apache-2.0; see the README there) and every message the tests produce is validated against them.

An alert is a Detection Finding the moment the incident service files it (status New) or a benign verdict
mutes it (status Suppressed: still reported, never hidden); the analytic is "Learning (ML/DL)" (type_id 4)
named by the model version, and the top features are observables. An incident is an Incident Finding:
Create on its first alert, Update after, Close when it goes quiet; priority_id from triage (page: High; the
generated 1.1.0 schema types the ``priority`` caption as an integer, so only the id is written), verdict
Benign when an analyst marked it so. Our own fields that OCSF has no place for go under ``unmapped``.

As a SIEM engineer reads them (issue 31 item 17): ``metadata.uid`` is unique per event (a lake that
deduplicates on it keeps every update; the same change re-sent after a restart has the same uid), while
``finding_info.uid`` names the finding across its events; both classes name the model version (the analytic's
uid); a close that nobody decided is status Closed ("closed after a quiet gap; never reviewed" when it paged),
and only a benign verdict is Resolved; observables are only real entities (none in a KDD record: the top
features are evidence, under ``unmapped``), never type 99 "Other". Every finding is validated against the
vendored 1.1.0 schemas and the newest ``ocsf-json-schema`` ships (1.8.0).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from typing import Any

VERSION = "1.1.0"
PRODUCT = {"name": "kdd-stream-detector", "vendor_name": "kdd-stream-detector"}
SEVERITY = ((2.0, 2, "Low"), (5.0, 3, "Medium"), (20.0, 4, "High"), (float("inf"), 5, "Critical"))
LEARNING = {"type_id": 4, "type": "Learning (ML/DL)", "name": "autoencoder reconstruction error"}
ANOMALY_TYPES = ["Network anomaly"]
IP_ADDRESS = 2  # OCSF observable type_id


def severity(ratio: float) -> tuple[int, str]:
    """OCSF severity from how far over its threshold a score is (severity 1 = just over the line)."""
    for upper, uid, name in SEVERITY:
        if ratio < upper:
            return uid, name
    return 5, "Critical"


def _ms(iso: Any, default: int) -> int:
    if isinstance(iso, str):
        try:
            return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return default
    return default


def event_ms(doc: dict[str, Any]) -> int:
    """An alert document's event time in epoch ms (now, when it has none)."""
    return _ms(doc.get("event_time"), int(time.time() * 1000))


def _metadata(feature: str, uid: str) -> dict[str, Any]:
    return {"version": VERSION, "uid": uid, "product": {**PRODUCT, "feature": {"name": feature}}}


def detection_finding(doc: dict[str, Any], event_ms: int, *, suppressed_by: str | None = None,
                      incident_id: str | None = None) -> dict[str, Any]:
    """One alert document (as the detector wrote it, or compacted) as a Detection Finding: Create when it
    arrives, Update (status Suppressed) when a verdict mutes it."""
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    uid = f"{source.get('topic')}/{source.get('partition')}/{source.get('offset')}"
    at = doc.get("alert_at")  # the alert record itself: each is one event, whatever input record it is about
    at = at if isinstance(at, dict) and at.get("offset") is not None else source
    event_uid = f"{at.get('topic')}/{at.get('partition')}/{at.get('offset')}/{'suppressed' if suppressed_by else 'new'}"
    sev_id, sev = severity(float(doc.get("severity") or 1.0))
    cats = doc.get("categories") if isinstance(doc.get("categories"), dict) else {}
    features = [f.get("feature") for f in doc.get("top_features") or [] if isinstance(f, dict) and f.get("feature")]
    title = "Anomalous connection" + (f": {'/'.join(str(v) for v in cats.values())}" if cats else "")
    status = (3, "Suppressed") if suppressed_by else (1, "New")
    analytic = {**LEARNING, **({"uid": str(doc["model_version"])} if doc.get("model_version") else {})}
    activity = (2, "Update") if suppressed_by else (1, "Create")
    finding = {
        "activity_id": activity[0], "activity_name": activity[1], "category_uid": 2, "category_name": "Findings",
        "class_uid": 2004, "class_name": "Detection Finding", "type_uid": 200400 + activity[0],
        "type_name": f"Detection Finding: {activity[1]}", "severity_id": sev_id, "severity": sev,
        "status_id": status[0], "status": status[1], "time": event_ms,
        "metadata": _metadata("detector", event_uid),
        "finding_info": {"uid": uid, "title": title[:200], "types": ANOMALY_TYPES, "analytic": analytic,
                         "created_time": _ms(doc.get("detection_time"), event_ms),
                         "desc": _desc(doc, features)},
        "unmapped": {"record_id": doc.get("record_id"), "source": source, "score": doc.get("score"),
                     "top_features": features[:10],
                     "threshold": doc.get("threshold"), "severity": doc.get("severity"),
                     "normal_rank": doc.get("normal_rank"), "categories": cats, "incident_id": incident_id,
                     "suppressed_by": suppressed_by},
    }
    conn = doc.get("conn")
    if isinstance(conn, dict) and conn.get("orig_h") and conn.get("resp_h"):  # a Zeek connection: SIEMs pivot here
        # OCSF 1.1.0's Detection Finding holds endpoints in its evidence, not at the top level
        finding["evidences"] = [{"src_endpoint": {"ip": str(conn["orig_h"]), "port": int(conn.get("orig_p") or 0)},
                                 "dst_endpoint": {"ip": str(conn["resp_h"]), "port": int(conn.get("resp_p") or 0)}}]
        finding["observables"] = [{"name": "src_endpoint.ip", "type_id": IP_ADDRESS, "type": "IP Address",
                                   "value": str(conn["orig_h"])},
                                  {"name": "dst_endpoint.ip", "type_id": IP_ADDRESS, "type": "IP Address",
                                   "value": str(conn["resp_h"])}]
        finding["unmapped"]["conn"] = conn
    if suppressed_by:
        finding["status_detail"] = f"muted by the benign verdict on incident {suppressed_by}"
    return finding


def _desc(doc: dict[str, Any], features: list[Any]) -> str:
    score, threshold = doc.get("score"), doc.get("threshold")
    worst = ", ".join(str(f) for f in features[:3]) or "none named"
    if isinstance(score, int | float) and isinstance(threshold, int | float):
        return f"reconstruction error {score:.6g} over the threshold {threshold:.6g}; worst features: {worst}"[:500]
    return f"reconstruction error over the model's threshold; worst features: {worst}"[:500]


def incident_finding(inc: dict[str, Any], *, created: bool) -> dict[str, Any]:
    """One incident record (``Incident.to_dict()``) as an Incident Finding: Create, Update or Close."""
    closed = inc.get("status") == "closed"
    resolved = isinstance(inc.get("resolution"), dict)
    paged = (inc.get("triage") or {}).get("decision") == "page"
    activity = (3, "Close") if closed else (1, "Create") if created else (2, "Update")
    status = ((4, "Resolved") if resolved else (5, "Closed")) if closed else (1, "New") if created else \
        (2, "In Progress")
    sev_id, sev = severity(float(inc.get("max_severity") or 1.0))
    digest = hashlib.sha1(json.dumps(inc, sort_keys=True, default=str).encode("utf-8", "replace")).hexdigest()[:16]
    signature = [str(s) for s in inc.get("signature") or []]
    finding: dict[str, Any] = {  # OCSF requires an assignee or a group: the triage queue (page or review)
        "activity_id": activity[0], "activity_name": activity[1], "category_uid": 2, "category_name": "Findings",
        "class_uid": 2005, "class_name": "Incident Finding", "type_uid": 200500 + activity[0],
        "type_name": f"Incident Finding: {activity[1]}", "severity_id": sev_id, "severity": sev,
        "status_id": status[0], "status": status[1], "time": int(inc.get("last_seen_ms") or 0),
        "start_time": int(inc.get("first_seen_ms") or 0), "end_time": int(inc.get("last_seen_ms") or 0),
        "count": int(inc.get("alerts") or 0),
        "priority_id": 3 if paged else 1,
        "assignee_group": {"name": "page" if paged else "review", "desc": "the triage queue it is in"},
        "metadata": _metadata("incidents", f"{inc.get('incident_id')}/{digest}"),
        "finding_info_list": [{"uid": str(inc.get("incident_id")),
                               "title": ("Anomalous connections: " + "/".join(signature[:3]))[:200],
                               "types": ANOMALY_TYPES,
                               "analytic": {**LEARNING, **({"uid": str(inc["model_version"])[:64]}
                                                           if inc.get("model_version") else {})},
                               "first_seen_time": int(inc.get("first_seen_ms") or 0),
                               "last_seen_time": int(inc.get("last_seen_ms") or 0)}],
        "unmapped": {"priority": inc.get("priority"), "triage": inc.get("triage"), "signature": signature,
                     "top_features": dict(list((inc.get("features") or {}).items())[:10]),
                     "model_version": inc.get("model_version"),
                     "rate_per_min": inc.get("rate_per_min"), "labels": inc.get("labels"),
                     "exceeds_verdict": inc.get("exceeds_verdict")},
    }
    hosts = [("src_endpoint.ip", h) for h in list(inc.get("sources") or {})[:5]] + \
        [("dst_endpoint.ip", h) for h in list(inc.get("destinations") or {})[:5]]
    observables = [{"name": name, "type_id": IP_ADDRESS, "type": "IP Address", "value": str(h)}
                   for name, h in hosts if h != "(other)"]
    if observables:
        finding["observables"] = observables
    if closed and not resolved:
        finding["status_detail"] = ("closed after a quiet gap; it paged and was never reviewed" if paged else
                                    "closed after a quiet gap; never reviewed")
    resolution = inc.get("resolution")
    if isinstance(resolution, dict):
        finding |= {"verdict_id": 5, "verdict": "Benign", "assignee": {"name": str(resolution.get("analyst"))[:200]},
                    "comment": f"marked benign by {resolution.get('analyst')}: {resolution.get('note')}"[:500]}
    return finding
