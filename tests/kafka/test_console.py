"""The triage console in a real browser (Debian's headless Chromium, driven by Playwright) on a real broker, with
incidents from a replay through the producer, the detector and the incident service (which also writes OCSF
findings, each validated against the vendored OCSF 1.1.0 schemas)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
from playwright.sync_api import Page, sync_playwright

from core.kafka_io import read_to_end
from testkit import (
    REPO,
    ConsoleProcess,
    DetectorProcess,
    IncidentProcess,
    latest_incidents,
    producer_args,
    wait_until,
)
from tests.conftest import TopicFactory
from tests.kafka.test_incidents import produce

ROWS = 6_000
SHOTS = REPO / "artifacts" / "console"
SCHEMAS = REPO / "incidents" / "ocsf_schema"


def replayed_alerts(bootstrap: str, topic: str, alerts: str, bundle: Path, kdd: Path, tmp: Path) -> int:
    """ROWS rows of the KDD99 file through the real producer and detector; the number of alerts."""
    replay = subprocess.run(producer_args(bootstrap, topic, kdd, "--limit", str(ROWS)), cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr[-3000:]
    with DetectorProcess(bootstrap, topic, alerts, bundle, log_path=tmp / "detector.log") as det:
        wait_until(lambda: det.total("detector_records_scored_total") >= ROWS, 180, "the replay scored")
        assert det.stop() == 0
    return len(read_to_end({"bootstrap.servers": bootstrap}, alerts))


def ranked(incidents: dict[str, dict[str, Any]]) -> list[str]:
    """Open incidents in the order the console promises: priority, then the most recent, then the id."""
    live = [i for i in incidents.values() if i["status"] != "closed"]
    return [i["incident_id"] for i in sorted(live, key=lambda i: (-i["priority"], -i["last_seen_ms"],
                                                                    i["incident_id"]))]


def shown_rows(page: Page) -> list[tuple[str, float]]:
    return [(str(r.get_attribute("data-id")), float(str(r.get_attribute("data-priority"))))
            for r in page.locator("tr.incident").all()]


def test_triage_in_a_browser_list_detail_mark_benign_and_suppression(kafka_bootstrap: str, make_topic: TopicFactory,
                                                                      small_bundle: Path, kdd_path: Path,
                                                                      tmp_path: Path) -> None:
    topic, alerts, ocsf_topic = make_topic("console-in"), make_topic("console-alerts"), make_topic("console-ocsf")
    n_alerts = replayed_alerts(kafka_bootstrap, topic, alerts, small_bundle, kdd_path, tmp_path)
    assert n_alerts >= 20, "the replay must raise alerts for the console to show"
    with IncidentProcess(kafka_bootstrap, alerts, "--idle-close-s", "3600", "--ocsf-topic", ocsf_topic, "--gap-s",
                         "3600", "--max-future-skew-s", "300",
                         log_path=tmp_path / "incidents.log") as svc:
        wait_until(lambda: svc.total("incidents_alerts_total") >= n_alerts, 120, "every alert filed")
        incidents = latest_incidents(kafka_bootstrap, svc.topics["incident"])
        order = ranked(incidents)
        assert len(order) >= 3
        with ConsoleProcess(kafka_bootstrap, svc, "--page-size", "200", log_path=tmp_path / "console.log") as console, \
                sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                         args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            SHOTS.mkdir(parents=True, exist_ok=True)

            # the list: every open incident, best priority first, as the topic has them
            page.goto(console.url + "/")
            rows = shown_rows(page)
            assert [i for i, _ in rows] == order
            assert [p for _, p in rows] == sorted((p for _, p in rows), reverse=True)
            page.screenshot(path=SHOTS / "list.png")

            # the detail: signature, explaining features and sample records with their coordinates
            top = order[0]
            page.click(f"tr[data-id='{top}'] a")
            page.wait_for_selector("#features")
            assert page.locator("#features td:first-child").all_inner_texts() == list(incidents[top]["features"])
            assert " / ".join(incidents[top]["signature"]) in page.inner_text("#summary")
            sample = incidents[top]["sample"]
            cells = page.locator("#sample tr:has(td)").all()
            assert len(cells) == len(sample) > 0
            assert cells[0].locator("td").all_inner_texts() == [str(sample[0][k]) for k in
                                                                 ("record_id", "topic", "partition", "offset")]
            page.screenshot(path=SHOTS / "detail.png", full_page=True)

            # mark benign: the verdict the CLI writes lands on the feedback topic
            page.fill("#analyst", "ann")
            page.fill("#reason", "the lab's own scanner")
            page.fill("#hours", "48")
            page.click("#mark")
            page.wait_for_selector("#sent")
            [verdict] = [json.loads(m.value()) for m in read_to_end({"bootstrap.servers": kafka_bootstrap},
                                                                    svc.topics["feedback"])]
            assert verdict["incident_id"] == top and verdict["analyst"] == "ann"
            assert verdict["note"] == "the lab's own scanner" and verdict["verdict"] == "benign"
            assert verdict["until_ms"] - verdict["decided_ms"] == 48 * 3_600_000
            wait_until(lambda: svc.total("incidents_suppression_rules") == 1, 60, "the verdict applied")

            # later alerts of that kind (one of the incident's own, again, and four minutes on: a later rate window,
            # yet within the service's 5-minute future skew, so not refiled as "now") are held by the verdict's
            # rate window; once the window rolls over the first is suppressed for good, kept and counted
            again = next(d for d in (json.loads(m.value()) for m in read_to_end({"bootstrap.servers":
                                                                                 kafka_bootstrap}, alerts))
                         if d["record_id"] == sample[0]["record_id"])
            later = dt.datetime.fromisoformat(again["event_time"]) + dt.timedelta(minutes=4)
            produce(kafka_bootstrap, alerts, [again, again | {"event_time": later.isoformat()}])
            wait_until(lambda: svc.total("incidents_suppressed_alerts_total") == 1, 60, "the repeat suppressed")
            assert svc.total("incidents_held_alerts") == 1 and svc.total("incidents_alerts_total") == n_alerts
            [muted] = [json.loads(m.value()) for m in read_to_end({"bootstrap.servers": kafka_bootstrap},
                                                                  svc.topics["suppressed"])]
            assert muted["record_id"] == again["record_id"] and muted["suppressed_by"] == top

            # the incident shows the verdict (live, from the topic) and the verdicts page lists it, in force
            wait_until(lambda: "ann" in _text(page, f"{console.url}/incidents/{top}", "#summary"), 30,
                       "the verdict on the incident")
            page.goto(console.url + "/verdicts")
            row = page.locator("tr.verdict").first.locator("td").all_inner_texts()
            assert row[2] == "ann" and row[3] == top and row[5] == "in force"
            page.screenshot(path=SHOTS / "verdicts.png")
            browser.close()
        assert svc.stop() == 0
    assert_valid_ocsf(kafka_bootstrap, ocsf_topic, n_alerts + 2)


def _text(page: Page, url: str, selector: str) -> str:
    page.goto(url)
    return page.inner_text(selector)


def assert_valid_ocsf(bootstrap: str, topic: str, alerts: int) -> None:
    """Every finding on the OCSF topic validates; a Detection Finding per alert received (Create, the muted ones
    too) and an Update for the one suppressed."""
    validators = {(uid, folder): jsonschema.Draft202012Validator(json.loads((folder / f"{name}.json").read_text()))
                  for uid, name in ((2004, "detection_finding"), (2005, "incident_finding"))
                  for folder in (SCHEMAS, SCHEMAS / "1.8.0")}  # what the findings declare, and the newest
    findings = [json.loads(m.value()) for m in read_to_end({"bootstrap.servers": bootstrap}, topic)]
    for f in findings:
        for folder in (SCHEMAS, SCHEMAS / "1.8.0"):
            errors = list(validators[(f["class_uid"], folder)].iter_errors(f))
            assert not errors, f"{f['metadata']['uid']} ({folder.name}): {errors[0].message}"
    uids = [f["metadata"]["uid"] for f in findings]
    assert len(set(uids)) == len(uids), "a lake deduplicating on metadata.uid would drop updates"
    detections = [f["activity_name"] for f in findings if f["class_uid"] == 2004]
    assert detections.count("Create") == alerts and detections.count("Update") == 1
    updates = [f["status"] for f in findings if f["activity_name"] == "Update" and f["class_uid"] == 2004]
    assert updates == ["Suppressed"]
    assert any(f["class_uid"] == 2005 and f.get("verdict") == "Benign" for f in findings)


def test_the_console_token_and_cross_origin_posts(kafka_bootstrap: str, make_topic: TopicFactory,
                                                  tmp_path: Path) -> None:
    """With a token, nothing but the probes answers without it; a POST from another origin is refused."""
    alerts = make_topic("console-auth")
    with IncidentProcess(kafka_bootstrap, alerts, log_path=tmp_path / "i.log") as svc, \
            ConsoleProcess(kafka_bootstrap, svc, "--token", "s3cret", log_path=tmp_path / "c.log") as console:
        assert console.get("/")[0] == 401
        assert console.get("/healthz")[0] == 200
        for auth, status in (("Bearer s3cret", 200), ("Basic " + _b64("any:s3cret"), 200),
                             ("Bearer wrong", 401), ("Basic " + _b64("any:wrong"), 401)):
            assert _request(console.url + "/", {"Authorization": auth}) == status
        forged = {"Authorization": "Bearer s3cret", "Origin": "http://evil.example",
                  "Content-Type": "application/x-www-form-urlencoded"}
        assert _request(console.url + "/incidents/x/benign", forged, b"analyst=a&reason=b&hours=1") == 403
        assert not read_to_end({"bootstrap.servers": kafka_bootstrap}, svc.topics["feedback"])
        assert console.stop() == 0


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def _request(url: str, headers: dict[str, str], body: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
