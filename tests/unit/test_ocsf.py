"""Every OCSF finding the incident service can write validates against the vendored OCSF 1.1.0 and 1.8.0 JSON Schemas
(Detection Finding 2004, Incident Finding 2005): new, suppressed and hostile-but-valid alerts, incidents as
they open, grow, are marked benign and close."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incidents import ocsf
from incidents.alert_input import AlertError, alert_from_doc
from incidents.book import IncidentBook
from incidents.verdicts import VerdictDoc
from tests.unit.test_triage import T0, doc

SCHEMAS = Path(__file__).resolve().parents[2] / "incidents" / "ocsf_schema"


@pytest.fixture(scope="module")
def validators() -> dict[int, list[jsonschema.protocols.Validator]]:
    """Each class's schema in OCSF 1.1.0 (what the findings declare) and 1.8.0 (the newest ocsf-json-schema ships)."""
    out: dict[int, list[jsonschema.protocols.Validator]] = {2004: [], 2005: []}
    for folder in (SCHEMAS, SCHEMAS / "1.8.0"):
        for uid, name in ((2004, "detection_finding"), (2005, "incident_finding")):
            schema = json.loads((folder / f"{name}.json").read_text())
            jsonschema.Draft202012Validator.check_schema(schema)
            out[uid].append(jsonschema.Draft202012Validator(schema))
    return out


def valid(validators: dict[int, Any], finding: dict[str, Any]) -> None:
    for validator in validators[finding["class_uid"]]:
        errors = sorted(validator.iter_errors(finding), key=str)
        assert not errors, validator.schema["$id"] + ": " + "\n".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])
    assert all(o.get("type_id") != 99 for o in finding.get("observables", []))  # issue 31 item 17


def test_alerts_and_incidents_through_their_life_are_valid_findings(validators: dict[int, Any]) -> None:
    book = IncidentBook(gap_ms=300_000)
    findings = []
    for i in range(30):
        d = doc(i, T0 + i * 1000, severity=1.0 + i, label="smurf.") | {"model_version": "ae-1", "score": 0.5,
                                                                        "threshold": 0.01}
        alert = alert_from_doc(d, T0 + i * 1000)
        filing = book.add(alert)
        findings.append(ocsf.detection_finding(alert.compact(), alert.event_ms,
                                               incident_id=filing.changed[-1].incident_id))
        findings += [ocsf.incident_finding(inc.to_dict(), created=inc.alerts == 1) for inc in filing.changed]
    inc = max(book.incidents.values(), key=lambda i: i.alerts)  # severities span several buckets
    assert book.mark_benign(VerdictDoc(inc.incident_id, T0 + 3_600_000, T0 + 40_000, "ann", "lab scan"))[0] == "applied"
    closed = ocsf.incident_finding(inc.to_dict(), created=False)  # the verdict closed it
    findings.append(closed)
    findings += [ocsf.incident_finding(i.to_dict(), created=False) for i in book.close_idle(T0 + 3_600_000, 0)]
    suppressed = ocsf.detection_finding(doc(99, T0, severity=2.0), T0, suppressed_by=inc.incident_id)
    findings.append(suppressed)
    for f in findings:
        valid(validators, f)
    assert findings[0]["finding_info"]["analytic"]["type"] == "Learning (ML/DL)"
    assert findings[0]["unmapped"]["top_features"][:1] == ["service"]
    assert "reconstruction error 0.5 over the threshold 0.01" in findings[0]["finding_info"]["desc"]
    assert findings[0]["finding_info"]["analytic"]["uid"] == "ae-1"
    uids = [f["metadata"]["uid"] for f in findings]
    assert len(set(uids)) == len(uids)  # a lake deduplicating on metadata.uid keeps every event
    assert closed["activity_name"] == "Close" and closed["verdict"] == "Benign" and "ann" in closed["comment"]
    assert closed["status"] == "Resolved" and closed["finding_info_list"][0]["analytic"]["uid"] == "ae-1"
    quiet = [f for f in findings if f["class_uid"] == 2005 and f["activity_name"] == "Close" and "verdict" not in f]
    assert quiet and all(f["status"] == "Closed" and "never reviewed" in f["status_detail"] for f in quiet)
    assert suppressed["status"] == "Suppressed" and suppressed["activity_name"] == "Update"
    assert {f["severity_id"] for f in findings if f["class_uid"] == 2004} >= {2, 3, 4, 5}


@settings(max_examples=200, deadline=None)
@given(severity=st.floats(min_value=1.0, max_value=1e30), labels=st.dictionaries(st.text(max_size=300),
       st.integers(0, 10**9), max_size=40), features=st.lists(st.text(min_size=1, max_size=500), max_size=30))
def test_any_alert_and_incident_the_service_accepts_is_a_valid_finding(validators: dict[int, Any], severity: float,
                                                                      labels: dict[str, int],
                                                                      features: list[str]) -> None:
    d = doc(1, T0, severity=severity) | {"top_features": [{"feature": f} for f in features]}
    alert = alert_from_doc(d, T0)
    valid(validators, ocsf.detection_finding(alert.compact(), T0))
    book = IncidentBook(gap_ms=300_000)
    book.add(alert)
    [inc] = book.incidents.values()
    record = inc.to_dict() | {"labels": labels}
    valid(validators, ocsf.incident_finding(record, created=True))


def test_a_zeek_alert_names_its_hosts_for_a_siem_to_pivot_on(validators: dict[int, Any]) -> None:
    """Issue 30 item 4: alerts that carry the connection (uid, endpoints, community_id) fill the evidence's
    src_endpoint and dst_endpoint and IP-address observables (type_id 2); incidents count and name their hosts."""
    conn = {"uid": "CHLXQF2OBY4onAR0Ug", "orig_h": "10.0.0.5", "orig_p": 40000, "resp_h": "192.168.1.9",
            "resp_p": 22, "community_id": "1:abc="}
    book = IncidentBook(gap_ms=300_000)
    for i in range(3):
        alert = alert_from_doc(doc(i, T0 + i) | {"conn": conn | {"resp_h": f"192.168.1.{9 + i}"}}, T0)
        filing = book.add(alert)
    finding = ocsf.detection_finding(alert.compact(), T0)
    valid(validators, finding)
    assert finding["evidences"][0]["src_endpoint"] == {"ip": "10.0.0.5", "port": 40000}
    assert {(o["type_id"], o["value"]) for o in finding["observables"]} == {(2, "10.0.0.5"), (2, "192.168.1.11")}
    inc = filing.changed[-1].to_dict()
    assert inc["sources"] == {"10.0.0.5": 3} and len(inc["destinations"]) == 3
    incident = ocsf.incident_finding(inc, created=False)
    valid(validators, incident)
    assert (2, "10.0.0.5") in {(o["type_id"], o["value"]) for o in incident["observables"]}
    with pytest.raises(AlertError, match="conn.orig_h"):
        alert_from_doc(doc(9, T0) | {"conn": conn | {"orig_h": "not-an-ip"}}, T0)
