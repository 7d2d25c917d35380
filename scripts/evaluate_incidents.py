"""Replay a labelled file through the detector and the incident service on a real broker; one JSON line last.

``python -m scripts.evaluate_incidents [--data FILE] [--model DIR] [--limit N] [--seeds 0,1,2,3,4]``

Feedback is measured honestly: the file's rows are split into two random halves (seeded). The first half is
replayed and every incident whose alerts are mostly labelled normal is marked benign with the feedback
command's own code; then the second half is replayed with those verdicts in force. ``recall`` and
``false_alerts`` count the second half's alerts as the detector raised them; the ``*_after_feedback``
figures leave out what the verdicts suppressed. Labels are read only here, to count.

What an analyst's attention buys: ``precision_at_k`` is the share of the top k incidents by priority that
are mostly attacks, ``attack_types_at_k`` the distinct attack labels among them (k = 10, 50, 100);
``rankings`` gives the same for the alternatives (sum and maximum of severities, alert count, arrival order),
on the same incidents. The protocol runs once per seed; the JSON line has the first seed's figures at the
top level (the keys of earlier versions), every seed under ``seeds`` and the worst of each under ``worst``.

The trade-off (issue 33): each seed's alerts, as the detector raised them, are filed again in process by
the incident book (the service's own code, in event-time order) once per ``--margins`` value, with the
kind baselines learned and with them off (one alert per gap, the constant they replace): the same feedback
protocol, and for each the false-alert cut against the recall drop and the ``exceeds_verdict`` incidents
(``tradeoff``, and its worst over the seeds under ``worst.tradeoff``). ``realised_fpr`` is
``scripts.realised_fpr``: the held-out normal rows' false-positive rate on the file's two halves, with the
bundle's threshold and with ``--recalibrate``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import testkit as harness
from core.kafka import KafkaSettings
from core.records import Records, default_data_path, read_records
from core.settings import MODEL_DIR
from incidents.alert_input import alert_from_doc
from incidents.book import IncidentBook, Limits
from incidents.feedback import FeedbackSettings, send, verdict_producer
from incidents.triage import Budget
from incidents.verdicts import WINDOW_MS, VerdictDoc
from scripts.realised_fpr import realised_fpr

log = logging.getLogger("evaluate_incidents")


def subset(data: Records, keep: np.ndarray) -> Records:
    assert data.raw is not None and data.labels is not None
    return dataclasses.replace(data, features=data.features.iloc[:0], labels=data.labels[keep].reset_index(drop=True),
                               lines=data.lines[keep], raw=data.raw[keep].reset_index(drop=True))


def replay(bootstrap: str, topic: str, part: Records, det: harness.DetectorProcess, inc: harness.IncidentProcess,
           consumed_before: float) -> None:
    harness.produce_rows(bootstrap, topic, part)
    harness.wait_until(lambda: det.total("detector_records_consumed_total") >= consumed_before + len(part), 1800,
                       "the detector to consume the replay")
    def filed() -> bool:
        handled = inc.total("incidents_alerts_total") + inc.total("incidents_suppressed_alerts_total")
        return det.total("detector_alerts_total") <= handled and inc.total("incidents_held_alerts") == 0

    # held alerts (a verdict's open rate window) are settled once the idle input moves stream time on
    harness.wait_until(filed, 1800, "the incident service to file every alert")


def mark_benign(bootstrap: str, inc: harness.IncidentProcess) -> int:
    incidents = harness.latest_incidents(bootstrap, inc.topics["incident"])
    benign = [i for i, doc in incidents.items() if _mostly_normal(doc)]
    producer = None
    for incident_id in benign:
        verdict = FeedbackSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap),
                                   feedback_topic=inc.topics["feedback"], incident=incident_id, for_s=86_400,
                                   analyst="evaluate_incidents")
        producer = producer or verdict_producer(verdict)
        send(verdict, producer)
    harness.wait_until(lambda: inc.total("incidents_suppression_rules") >= len(benign), 120, "the verdicts applied")
    return len(benign)


def _mostly_normal(doc: dict[str, Any]) -> bool:
    labels = Counter({k.rstrip("."): v for k, v in doc["labels"].items()})
    return labels["normal"] * 2 > sum(labels.values())


RANKINGS: dict[str, Any] = {
    "priority": lambda d: d["priority"],
    "severity_sum": lambda d: d["severity_sum"],
    "max_severity": lambda d: d["max_severity"],
    "alerts": lambda d: d["alerts"],
    "arrival": lambda d: -d["first_seen_ms"],
}
KS = (10, 50, 100)


def ranked(incidents: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    """Precision and attack-type coverage of the top k incidents under one ranking (ties: incident id)."""
    order = sorted(incidents.values(), key=lambda d: (-RANKINGS[key](d), d["incident_id"]))
    out: dict[str, Any] = {}
    for k in KS:
        top = order[:k]
        out[f"precision_at_{k}"] = round(sum(not _mostly_normal(d) for d in top) / max(1, len(top)), 4)
        out[f"attack_types_at_{k}"] = len({lbl.rstrip(".") for d in top for lbl in d["labels"]} - {"normal"})
    return out


def figures(data: Records, half: np.ndarray, alerts: list[dict[str, Any]], suppressed: set[int],
            incidents: dict[str, dict[str, Any]], benign: int) -> dict[str, Any]:
    assert data.labels is not None
    ids = data.record_ids
    attack = data.is_attack
    alerted = np.isin(ids, [int(a["record_id"]) for a in alerts])
    muted = np.isin(ids, list(suppressed))
    second = ~half
    a2, n2 = second & attack, second & ~attack
    flagged_types = set(data.labels[alerted & attack])
    in_incidents = {k.rstrip(".") for doc in incidents.values() for k in doc["labels"]}
    filed = len(alerts) - len(suppressed)
    out = {
        "records": len(data), "alerts": len(alerts), "suppressed": len(suppressed), "incidents": len(incidents),
        "compression": round(filed / max(1, len(incidents)), 1),
        "recall": round(float((alerted & a2).sum() / max(1, a2.sum())), 5),
        "false_alerts": int((alerted & n2).sum()),
        "attack_types_flagged": len(flagged_types),
        "attack_types_in_incidents": len(flagged_types & in_incidents),
        "attack_types_missing_from_incidents": sorted(flagged_types - in_incidents),
        "false_alert_incidents": sum(_mostly_normal(doc) for doc in incidents.values()),
        "benign_verdicts": benign,
        "recall_after_feedback": round(float((alerted & ~muted & a2).sum() / max(1, a2.sum())), 5),
        "false_alerts_after_feedback": int((alerted & ~muted & n2).sum()),
    }
    out["false_alert_cut"] = round(1 - out["false_alerts_after_feedback"] / max(1, out["false_alerts"]), 4)
    out["recall_drop_points"] = round(100 * (out["recall"] - out["recall_after_feedback"]), 3)
    by_priority = ranked(incidents, "priority")
    for k in KS:
        out[f"precision_at_{k}"] = by_priority[f"precision_at_{k}"]
        out[f"attack_types_at_{k}"] = by_priority[f"attack_types_at_{k}"]
    paged = [d for d in incidents.values() if d["triage"]["decision"] == "page"]
    out["paged"] = len(paged)
    out["paged_precision"] = round(sum(not _mostly_normal(d) for d in paged) / max(1, len(paged)), 4)
    out["exceeds_verdict_incidents"] = sum(d["exceeds_verdict"] is not None for d in incidents.values())
    out["rankings"] = {key: ranked(incidents, key) for key in RANKINGS}
    return out


def _file_in_process(book: IncidentBook, docs: list[dict[str, Any]]) -> set[str]:
    """File alerts in event-time order; the record ids suppressed (held ones settled by moving time on)."""
    suppressed: set[str] = set()
    for d in docs:
        suppressed |= {s["record_id"] for s, _ in book.add(alert_from_doc(d, 0)).suppressed}
    book.stream_ms += 2 * WINDOW_MS
    return suppressed | {s["record_id"] for s, _ in book.settle_rules()[0]}


def tradeoff(data: Records, half: np.ndarray, docs: list[dict[str, Any]], gap_s: float, budget: int,
             margins: list[float]) -> list[dict[str, Any]]:
    """The feedback protocol in process, per verdict margin, with kind baselines learned and off. One book
    holds every alert here, where the service keeps one per alert partition (each kind in one of them) with a
    share of the page budget: the cut and the recall drop are the same either way, ``paged`` is one book's."""
    ids = data.record_ids
    first_ids = {str(i) for i in ids[half]}
    ordered = sorted(docs, key=lambda d: (d["event_time"], int(d["record_id"])))
    first = [d for d in ordered if d["record_id"] in first_ids]
    second = [d for d in ordered if d["record_id"] not in first_ids]
    attack, second_rows = data.is_attack, ~half
    alerted = np.isin(ids, [int(d["record_id"]) for d in second])
    a2, n2 = second_rows & attack, second_rows & ~attack
    out = []
    for baselines in (True, False):
        for margin in margins:
            book = IncidentBook(int(gap_s * 1000), Budget(per_hour=budget, floor=2.0),
                                Limits(rate_margin=margin, baseline_max_per_min=60.0 if baselines else 0.0))
            _file_in_process(book, first)
            benign = [i for i, inc in book.incidents.items()
                      if _mostly_normal({"labels": dict(inc.labels)})]
            for incident_id in benign:
                book.mark_benign(VerdictDoc(incident_id, book.stream_ms + 86_400_000, book.stream_ms,
                                            "evaluate_incidents", "mostly normal"))
            muted = np.isin(ids, [int(r) for r in _file_in_process(book, second)])
            false_alerts = int((alerted & n2).sum())
            recall = float((alerted & a2).sum() / max(1, a2.sum()))
            out.append({"baselines": baselines, "margin": margin, "benign_verdicts": len(benign),
                        "false_alert_cut": round(1 - int((alerted & ~muted & n2).sum()) / max(1, false_alerts), 4),
                        "recall_drop_points": round(100 * (recall - float((alerted & ~muted & a2).sum()
                                                                          / max(1, a2.sum()))), 3),
                        "exceeds_verdict_incidents": sum(i.exceeds_verdict is not None
                                                         for i in book.incidents.values()),
                        "paged": sum(i.triage == "page" for i in book.incidents.values()),
                        "paged_mostly_normal": sum(i.triage == "page" and _mostly_normal({"labels": dict(i.labels)})
                                                   for i in book.incidents.values())})
    return out


def run(args: argparse.Namespace, data: Records, seed: int, bootstrap: str) -> dict[str, Any]:
    half = np.random.default_rng(seed).random(len(data)) < 0.5
    topic, alerts = harness.unique("eval-in"), harness.unique("eval-alerts")
    harness.create_topics(bootstrap, (topic, 6), (alerts, 6))
    det = harness.DetectorProcess(bootstrap, topic, alerts, args.model, log_path=args.work / "detector.log")
    # a short idle close and lateness: once a replay ends, the wall clock closes incidents and settles what
    # verdicts held (the input is idle by then: nothing is still on its way)
    inc = harness.IncidentProcess(bootstrap, alerts, "--gap-s", str(args.gap_s), "--idle-close-s", "10",
                                  "--allowed-lateness-s", "5", "--page-budget", str(args.page_budget),
                                  log_path=args.work / "incidents.log")
    with det, inc:
        log.info("first half: %d records", int(half.sum()))
        replay(bootstrap, topic, subset(data, half), det, inc, 0)
        benign = mark_benign(bootstrap, inc)
        log.info("%d incidents marked benign; second half: %d records", benign, int((~half).sum()))
        replay(bootstrap, topic, subset(data, ~half), det, inc, float(half.sum()))
        n_alerts = int(det.total("detector_alerts_total"))
        n_suppressed = int(inc.total("incidents_suppressed_alerts_total"))  # read while the service is up
    docs = harness.alert_docs(harness.drain(bootstrap, alerts, n_alerts, timeout_s=600))
    kept = harness.alert_docs(harness.drain(bootstrap, inc.topics["suppressed"], n_suppressed, timeout_s=300))
    incidents = harness.latest_incidents(bootstrap, inc.topics["incident"])
    out = figures(data, half, docs, {int(d["record_id"]) for d in kept}, incidents, benign)
    out["tradeoff"] = tradeoff(data, half, docs, args.gap_s, args.page_budget, args.margins)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.evaluate_incidents", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--data", type=Path, default=default_data_path(), help="labelled KDD-format file")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")),
                   help="bundle or model store (trained with the default preset when missing)")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N lines")
    p.add_argument("--seeds", default="0,1,2,3,4", help="seeds of the two halves, comma-separated: one run each")
    p.add_argument("--page-budget", type=int, default=20, help="the incident service's pages per hour")
    p.add_argument("--gap-s", type=float, default=300.0, help="the incident service's gap of inactivity")
    p.add_argument("--margins", type=lambda v: [float(x) for x in v.split(",")], default=[1.0, 1.5, 2.0, 3.0, 5.0],
                   help="verdict rate margins of the in-process trade-off, comma-separated")
    p.add_argument("--work", type=Path, default=Path("artifacts/evaluate-incidents"), help="logs go here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)
    harness.ensure_bundle(args.model, args.data)
    data = read_records(args.data, limit=args.limit, keep_raw=True)
    if data.labels is None:
        raise SystemExit(f"{args.data} has no labels: the evaluation needs a labelled file")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    runs = []
    with harness.broker(args.bootstrap_servers) as bootstrap:
        for seed in seeds:
            log.info("seed %d (%d of %d)", seed, len(runs) + 1, len(seeds))
            runs.append({"seed": seed, **run(args, data, seed, bootstrap)})
            log.info("seed %d: %s", seed, json.dumps({k: v for k, v in runs[-1].items() if k != "rankings"}))
    worst = {"recall_drop_points": max(r["recall_drop_points"] for r in runs),
             "false_alert_cut": min(r["false_alert_cut"] for r in runs),
             **{f"precision_at_{k}": min(r[f"precision_at_{k}"] for r in runs) for k in KS},
             **{f"attack_types_at_{k}": min(r[f"attack_types_at_{k}"] for r in runs) for k in KS},
             "tradeoff": [{**t, "false_alert_cut": min(r["tradeoff"][j]["false_alert_cut"] for r in runs),
                           "recall_drop_points": max(r["tradeoff"][j]["recall_drop_points"] for r in runs),
                           "exceeds_verdict_incidents": max(r["tradeoff"][j]["exceeds_verdict_incidents"]
                                                            for r in runs)}
                          for j, t in enumerate(runs[0]["tradeoff"])]}
    fpr = realised_fpr(args.model, args.data)
    print(json.dumps({**runs[0], "seeds": runs, "worst": worst, "realised_fpr": fpr}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
