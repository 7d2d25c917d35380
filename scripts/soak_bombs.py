"""Soak of compression bombs: does every consumer's memory stay within what its settings allow?

``python -m scripts.soak_bombs [--bombs 20] [--mb-per-bomb 200]`` sends gzip bombs (one batch of
``--mb-per-bomb`` records of 1 MB of zeros each, about 1 KB apiece on the wire) to the detector's input topic and
to the incident service's alert topic, between good records, and samples both services' RSS. It prints one
JSON line (baseline RSS after the good records, peak RSS during the bombs, and the bound the settings give)
and exits 0 when each peak stays within its pod limit in deploy/k8s (detector 3 GiB, incident service 1 GiB) and
every good record after the bombs was handled; 1 otherwise (named on stderr).

Why the bound: librdkafka decodes a whole fetch before its queue limit can stop the next one, and gzip has
no decode limit there, so what one fetch carries bounds the burst (``core.kafka.MEMORY_BOUNDS``: 256 KiB per
partition and 1 MiB per fetch, a batch that is larger still comes whole). A bomb this script sends is one
batch of ~200 KB: about 200 MB decoded. Issue 31 measured 0.48 MB of gzip raising the detector's RSS by
438 MB and 0.72 MB taking the incident service from 59 MB to 701 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Producer

import testkit as harness
from core.records import default_data_path, read_records
from core.settings import MODEL_DIR
from tests.unit.test_triage import doc

log = logging.getLogger("soak_bombs")


def send_bomb(bootstrap: str, topic: str, mb: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "gzip", "linger.ms": 2000,
                         "message.max.bytes": 1_000_000_000, "batch.size": 2_000_000_000,
                         "batch.num.messages": 1_000_000})
    for _ in range(mb):
        producer.produce(topic, value=b"\0" * 1_000_000)
    if producer.flush(120):
        raise RuntimeError(f"a bomb was not delivered to {topic}")


def send(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for v in values:
        producer.produce(topic, value=v)
    if producer.flush(60):
        raise RuntimeError(f"records were not delivered to {topic}")


class Peak(threading.Thread):
    """Samples a process's RSS every 50 ms until stopped; keeps the peak."""

    def __init__(self, svc: harness.ServiceProcess) -> None:
        super().__init__(daemon=True)
        self.svc, self.peak, self.done = svc, 0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                self.peak = max(self.peak, self.svc.rss_bytes())
            except OSError:
                return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.soak_bombs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bombs", type=int, default=int(os.environ.get("SOAK_BOMBS", "20")),
                   help="bombs per service [env SOAK_BOMBS; default 20]")
    p.add_argument("--mb-per-bomb", type=int, default=200, help="MB each bomb decodes to (default 200)")
    p.add_argument("--detector-limit-mb", type=float, default=3072,
                   help="the detector's peak RSS allowed (default 3072: its pod limit in deploy/k8s)")
    p.add_argument("--incidents-limit-mb", type=float, default=1024,
                   help="the incident service's peak RSS allowed (default 1024: its pod limit in deploy/k8s)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")),
                   help=f"model bundle (trained on the KDD99 file if absent) [env {MODEL_DIR}]")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    data = default_data_path()
    harness.ensure_bundle(args.model, data)
    rows = read_records(data, limit=2000, keep_raw=True)
    lines = [rows.payload(line).encode() for line in rows.raw]
    t0 = int(time.time() * 1000) - 3_600_000
    with harness.broker() as bootstrap:
        topic, alerts = harness.unique("bomb-in"), harness.unique("bomb-alerts")
        harness.create_topics(bootstrap, (topic, 1), (alerts, 1))
        det = harness.DetectorProcess(bootstrap, topic, alerts, args.model)
        inc = harness.IncidentProcess(bootstrap, alerts)
        with det, inc:
            send(bootstrap, topic, lines[:1000])
            harness.wait_until(lambda: det.total("detector_records_consumed_total") >= 1000, 120, "warm-up scored")
            base = {"detector": det.rss_bytes(), "incidents": inc.rss_bytes()}
            peaks = {"detector": Peak(det), "incidents": Peak(inc)}
            for peak in peaks.values():
                peak.start()
            filed = inc.total("incidents_alerts_total") + inc.total("incidents_unreadable_alerts_total")
            for i in range(args.bombs):
                log.info("bomb %d of %d (%d MB decoded each, to both services)", i + 1, args.bombs, args.mb_per_bomb)
                send_bomb(bootstrap, topic, args.mb_per_bomb)
                send_bomb(bootstrap, alerts, args.mb_per_bomb)
            send(bootstrap, topic, lines[1000:])
            send(bootstrap, alerts, [json.dumps(doc(900_000 + k, t0 + k)).encode() for k in range(10)])
            harness.wait_until(lambda: det.total("detector_records_consumed_total") >= len(lines), 600,
                               "the good records after the bombs")
            harness.wait_until(lambda: inc.total("incidents_alerts_total") >= filed + 10, 600, "the alerts after")
            for peak in peaks.values():
                peak.done.set()
                peak.join()
    mib = 1 << 20
    result = {"bombs": args.bombs, "mb_decoded_per_bomb": args.mb_per_bomb,
              "gzip_kb_per_bomb": round(args.mb_per_bomb * 1.0, 1),
              "limits_mb": {"detector": args.detector_limit_mb, "incidents": args.incidents_limit_mb},
              **{f"{k}_baseline_mb": round(v / mib, 1) for k, v in base.items()},
              **{f"{k}_peak_mb": round(p.peak / mib, 1) for k, p in peaks.items()}}
    print(json.dumps(result))
    limits = {"detector": args.detector_limit_mb, "incidents": args.incidents_limit_mb}
    over = [k for k, p in peaks.items() if p.peak / mib > limits[k]]
    if over:
        print(f"soak_bombs: peak RSS over the pod limit: {over} ({limits})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
