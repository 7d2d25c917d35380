"""Replay KDD99 rows onto a Kafka topic at a controlled rate.

Exit codes: 0 every record delivered (also after SIGINT/SIGTERM, once in-flight records are flushed);
1 some deliveries failed; 2 bad arguments or input (missing file, malformed line under --strict);
3 Kafka unreachable, or it rejected the credentials or TLS settings.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from producer import kafka_options
from producer.kafka_options import KafkaConnectError, check_connection, ensure_topic
from producer.metrics import ProducerMetrics
from producer.replay import Replayer
from producer.source import FORMATS, SourceOptions
from training import cli_env
from training.kdd99 import KddFormatError, default_data_path

log = logging.getLogger("producer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m producer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    kafka_options.add_arguments(p)
    cli_env.add(p, "--topic", "PRODUCER_TOPIC", default="kdd-connections", help="topic to write to")
    cli_env.add(p, "--data", "KDD_DATA", default=default_data_path(), type=Path, help="KDD-format file (gz or plain)")
    cli_env.add(p, "--format", "PRODUCER_FORMAT", default="csv", choices=list(FORMATS),
                help="csv: the source line without its label; json: an object with the 41 named fields")
    cli_env.add(p, "--rate", "PRODUCER_RATE", default=0.0, type=float, help="records per second, 0 = unlimited")
    cli_env.add(p, "--limit", "PRODUCER_LIMIT", type=int, help="stop after N records")
    cli_env.add_flag(p, "--shuffle", "PRODUCER_SHUFFLE", help="replay in a seeded random order (reads the whole file)")
    cli_env.add(p, "--seed", "PRODUCER_SEED", default=0, type=int, help="seed for --shuffle and sampling")
    cli_env.add_flag(p, "--loop", "PRODUCER_LOOP", help="replay endlessly")
    cli_env.add(p, "--anomaly-fraction", "PRODUCER_ANOMALY_FRACTION", type=float,
                help="subsample attack rows to this share of the stream, e.g. 0.01")
    cli_env.add_flag(p, "--strict", "PRODUCER_STRICT", help="a malformed input line is fatal (default: count, skip)")
    cli_env.add(p, "--partitions", "PRODUCER_PARTITIONS", default=6, type=int, help="partitions if creating the topic")
    cli_env.add(p, "--replication-factor", "PRODUCER_REPLICATION_FACTOR", default=1, type=int,
                help="replication factor if creating the topic")
    cli_env.add(p, "--metrics-port", "PRODUCER_METRICS_PORT", type=int,
                help="serve Prometheus metrics on this port (default: off)")
    cli_env.add_flag(p, "--progress", "PRODUCER_PROGRESS", help="progress bar (default: on a terminal only)")
    p.set_defaults(progress=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        kafka = kafka_options.from_args(args)
        source = SourceOptions(data=args.data, fmt=args.format, shuffle=args.shuffle, seed=args.seed,
                               limit=args.limit, loop=args.loop, anomaly_fraction=args.anomaly_fraction,
                               strict=args.strict)
        if not args.data.exists():
            raise KddFormatError(f"KDD data file {args.data} does not exist; pass --data PATH or set KDD_DATA")
        conf = kafka.client_config()
        log.info("replaying %s to %s on %s", args.data, args.topic, kafka_options.redacted(conf))
        metadata = check_connection(conf, kafka.connect_timeout_s)
        ensure_topic(conf, args.topic, args.partitions, args.replication_factor, metadata=metadata)
        metrics = None
        if args.metrics_port is not None:
            metrics = ProducerMetrics()
            metrics.serve(args.metrics_port)
        replayer = Replayer(conf, args.topic, source, rate=args.rate, progress=args.progress, metrics=metrics)
    except (ValueError, KddFormatError) as exc:
        log.error("%s", exc)
        return 2
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    except Exception as exc:  # noqa: BLE001 - e.g. KafkaException: authentication, unreachable cluster
        log.error("cannot start the replay against %s: %s", args.bootstrap_servers, exc)
        return 1

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: flushing records in flight", signal.Signals(signum).name)
        replayer.stop_event.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        result = replayer.run()
    except KddFormatError as exc:
        log.error("%s", exc)
        print(json.dumps(replayer.result.summary()))
        return 2
    summary = result.summary()
    log.info("sent %d, delivered %d, failed %d, %d malformed lines skipped, %.0f records/s", result.sent,
             result.delivered, result.failed, result.source.malformed, result.rate)
    print(json.dumps(summary))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
