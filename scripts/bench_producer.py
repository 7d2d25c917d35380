"""Maximum produce rate of a whole record file (default: the 494,021-row 10% file), printed as one JSON line.

``python -m scripts.bench_producer [--bootstrap-servers B] [--data FILE] [--format csv|json]``. Without
``KAFKA_BOOTSTRAP_SERVERS`` it starts a local single-node broker and stops it afterwards. The rate counts
delivered records (acks=all, idempotent, lz4) from the first send to the last acknowledgement.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import testkit as harness
from core.records import default_data_path
from producer.replay import Replayer
from producer.source import SourceOptions


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_producer", description=__doc__)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--data", type=Path, default=default_data_path())
    p.add_argument("--format", default="csv", choices=["csv", "json"])
    p.add_argument("--partitions", type=int, default=6)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic = harness.unique("bench-producer")
        harness.create_topics(bootstrap, (topic, args.partitions))
        result = Replayer({"bootstrap.servers": bootstrap}, topic, SourceOptions(data=args.data, fmt=args.format),
                          rate=0, progress=False).run()
    print(json.dumps({"benchmark": "producer_max_rate", "data": str(args.data), "format": args.format,
                      "records": result.delivered, "failed": result.failed, "seconds": round(result.seconds, 2),
                      "records_per_s": round(result.rate)}))
    return 0 if result.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
