"""The Zeek demo (``bash scripts/demo --zeek [FILE]``): a labelled conn.log through the whole pipeline, the way a
network is watched. A local Kafka broker (or KAFKA_BOOTSTRAP_SERVERS), a zeek_conn model trained on the file's
benign rows when none is given (DEMO_ZEEK_MODEL), the replay producer sending each line as Zeek wrote it (labels
taken off), the detector's conn stage featurizing each partition, and the incident service grouping alerts by
source host; then the incidents, one per host and kind, with the hosts each touched.

FILE defaults to the repository's 700-connection excerpt of CTU-Normal-40 (tests/fixtures/zeek, GPL-2.0, see its
SOURCES.md). Environment: DEMO_ZEEK_SPEEDUP (0 = as fast as possible, the default; 1 = the capture's own pace).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import testkit as harness  # noqa: E402
from deploy.kafka import local_kafka  # noqa: E402

DEFAULT = REPO / "tests" / "fixtures" / "zeek" / "ctu-normal-40-day1.conn.log.labeled"


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}" if sys.stdout.isatty() else f"[demo] {msg}", flush=True)


def train(data: Path, model: Path) -> None:
    if (model / "bundle.json").exists():
        return
    say(f"no zeek_conn bundle at {model}: training one on the benign rows of {data}")
    subprocess.run([sys.executable, "-m", "training", "train", "--schema", "zeek_conn", "--data", str(data), "--out",
                    str(model), "--epochs", "20"], cwd=REPO, env={**os.environ, **harness.QUIET_TF}, check=True)


def count_lines(data: Path) -> int:
    with data.open("rb") as f:
        return sum(1 for line in f if line.strip() and not line.startswith(b"#"))


def show(latest: dict[str, dict]) -> None:
    rows = sorted(latest.values(), key=lambda d: -d["alerts"])
    say(f"{len(rows)} incidents (grouped by source host and kind), most alerts first:")
    for d in rows[:15]:
        src = ", ".join(d.get("sources", {})) or "-"
        top_dst = ", ".join(list(d.get("destinations", {}))[:3])
        labels = ", ".join(f"{k} {v}" for k, v in sorted(d["labels"].items(), key=lambda kv: -kv[1])[:2])
        print(f"  {src:>16} -> {d.get('distinct_destinations', 0):>4} hosts (e.g. {top_dst:40.40})  alerts "
              f"{d['alerts']:>5}  {d['triage']['decision']:6}  priority {d['priority']:8.1f}  labels: {labels}",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bash scripts/demo --zeek", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", nargs="?", type=Path, default=DEFAULT, help="a Zeek conn.log (TSV, JSON, labelled or not)")
    p.add_argument("--speedup", type=float, default=float(os.environ.get("DEMO_ZEEK_SPEEDUP", "0")),
                   help="replay pace: 0 as fast as possible, 1 the capture's own [env DEMO_ZEEK_SPEEDUP; default 0]")
    args = p.parse_args(argv)
    data: Path = args.data
    if not data.is_file():
        print(f"error: {data} is not a file; give a Zeek conn.log", file=sys.stderr)
        return 2
    model = Path(os.environ.get("DEMO_ZEEK_MODEL", REPO / "artifacts" / "zeek-model"))
    train(data, model)
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        say(f"starting Apache Kafka {local_kafka.KAFKA_VERSION} (KRaft) on 127.0.0.1")
    with harness.broker() as bootstrap:
        topic, alerts = harness.unique("zeek-conn"), harness.unique("zeek-alerts")
        harness.create_topics(bootstrap, (topic, 2))
        det = harness.DetectorProcess(bootstrap, topic, alerts, model, "--flush-idle-s", "3")
        inc = harness.IncidentProcess(bootstrap, alerts, "--group-by", "source", "--idle-close-s", "5")
        with det, inc:
            say(f"replaying {data} onto {topic}; detector metrics http://127.0.0.1:{det.port}/metrics")
            sent = subprocess.run(harness.producer_args(bootstrap, topic, data, "--schema", "zeek_conn", "--no-strict",
                                                        "--speedup", str(args.speedup)),
                                  cwd=REPO, capture_output=True, text=True, check=True)
            say(f"replay: {sent.stdout.strip().splitlines()[-1]}")
            expected = count_lines(data)
            harness.wait_until(lambda: harness.total(det.metrics(), "detector_records_scored_total")
                               + harness.total(det.metrics(), "detector_dead_letters_total") >= expected
                               and det.metrics().get("detector_featurizer_state{part=pending}") == 0.0, 300,
                               "every connection featurized and scored")
            m = det.metrics()
            say(f"detector: scored {harness.total(m, 'detector_records_scored_total'):.0f}, alerts "
                f"{harness.total(m, 'detector_alerts_total'):.0f}, dead letters "
                f"{harness.total(m, 'detector_dead_letters_total'):.0f}, late connections clamped "
                f"{m.get('detector_featurizer_events_total{event=late}', 0):.0f}")
            alerted = harness.total(m, "detector_alerts_total")
            latest: dict[str, dict] = {}

            def grouped() -> bool:
                latest.update(harness.latest_incidents(bootstrap, inc.topics["incident"]))
                return sum(d["alerts"] for d in latest.values()) >= alerted

            harness.wait_until(grouped, 120, "every alert in an incident", 1.0)
            show(latest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
