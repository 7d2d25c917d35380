"""End-to-end detector rate on Zeek conn records against a bare consumer, in the same run; prints one JSON line.

``python -m scripts.bench_zeek_detector [--model DIR] [--records N] [--hosts H] [--partitions P] [--runs R]``

1. Pre-fills a topic with N (default 200,000) synthetic conn.log TSV lines as the producer sends them (the
   ``zeek_fields`` header naming the columns): event time rising at 5,000 connections/s, a tenth arriving up to
   a minute late, destination hosts drawn from H (default 1,000,000) distinct addresses.
2. ``raw_consume_rps``: a consumer with the detector's client settings drains it in a fresh interpreter
   (``scripts.bench_detector.raw_consume``); ``detector_rps``: the detector's own code drains it (parse,
   featurize, score, alerts, featurizer snapshots, commit). Alternating ``--runs`` times, each in a fresh
   group (so each drain starts with empty featurizers and writes its own snapshots); the median run is
   reported, with every ratio and the detector's per-stage microseconds per record (``parse`` includes the
   featurizer: the conn stage is the detector's parse stage).

Without a bundle at ``--model`` a zeek_conn bundle is trained on the repository's labelled fixture first. Without
KAFKA_BOOTSTRAP_SERVERS a local broker is started and stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Producer

import testkit as harness
from core import zeek
from core.kafka import KafkaSettings
from detector.settings import DetectorSettings
from scripts.bench_detector import alternate

log = logging.getLogger("bench_zeek_detector")
FIXTURE = harness.REPO / "tests" / "fixtures" / "zeek" / "ctu-normal-40-day1.conn.log.labeled"


def lines(n: int, hosts: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        h = rng.randrange(hosts)
        ts = 1_700_000_000 + i / 5000 - (rng.random() * 60 if rng.random() < 0.1 else 0.0)
        state = ("SF", "S0", "REJ")[i % 3]
        fields = [f"{ts:.6f}", f"C{i:x}", f"10.0.{i % 250}.{i % 200}", str(1024 + i % 60000),
                  f"172.{16 + h // 65536 % 16}.{h // 256 % 256}.{h % 256}", str((80, 443, 53, 22)[i % 4]), "tcp", "-",
                  "0.100000", "100", "1000", state, "T", "F", "0", "ShADadFf", "5", "400", "5", "1400", "(empty)"]
        out.append("\t".join(fields).encode())
    return out


def prefill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"})
    header = [(zeek.FIELDS_HEADER, "\t".join(zeek.DEFAULT_FIELDS).encode())]
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode(), headers=header)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("pre-fill not delivered")


def ensure_zeek_bundle(model: Path) -> None:
    if (model / "bundle.json").exists():
        return
    subprocess.run([sys.executable, "-m", "training", "train", "--schema", "zeek_conn", "--data", str(FIXTURE),
                    "--out", str(model), "--epochs", "5"], cwd=harness.REPO, env={**os.environ, **harness.QUIET_TF},
                   check=True, stdout=sys.stderr)  # stdout is this benchmark's one JSON line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_zeek_detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--model", type=Path, default=Path("artifacts/zeek-bench-model"), help="a zeek_conn bundle")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--hosts", type=int, default=1_000_000)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--runs", type=int, default=3, help="alternating raw/detector drain pairs (median reported)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.update(harness.QUIET_TF)
    ensure_zeek_bundle(args.model)
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic = harness.unique("bench-zeek")
        harness.create_topics(bootstrap, (topic, args.partitions))
        t0 = time.monotonic()
        prefill(bootstrap, topic, lines(args.records, args.hosts))
        log.info("pre-filled %d conn records in %.0fs", args.records, time.monotonic() - t0)
        settings = DetectorSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), input_topic=topic,
                                    alert_topic=harness.unique("bench-zeek-alerts"), model=args.model,
                                    group_id=harness.unique("bench-zeek"), metrics_port=0)
        drains = alternate(settings, args.records, args.runs)
    print(json.dumps({"benchmark": "zeek_detector", "records": args.records, "distinct_hosts": args.hosts,
                      "partitions": args.partitions, **drains}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
