"""Replay connection records from a file onto a Kafka topic at a controlled rate.

Exit codes: 0 every record delivered (also after SIGINT/SIGTERM, once in-flight records are flushed);
1 some deliveries failed; 2 bad arguments or input (missing file, malformed line under --strict);
3 Kafka unreachable, it rejected the credentials or TLS settings, or an ACL denied what the replay needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from core import settings as cli
from core.acl import require
from core.kafka import KafkaConnectError, access_denied, check_connection, ensure_topic, redacted
from core.records import RecordFormatError
from core.schema import RecordSchema, SchemaError
from core.settings import SettingsError
from producer.metrics import ProducerMetrics
from producer.replay import Replayer
from producer.settings import ProducerSettings
from producer.source import SourceOptions

log = logging.getLogger("producer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m producer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_arguments(p, ProducerSettings)
    return p


def _replayer(s: ProducerSettings) -> Replayer:
    """Check the input and the cluster, create the topic if needed: everything that can fail before sending."""
    source = SourceOptions(data=s.data, fmt=s.format, shuffle=s.shuffle, seed=s.seed, limit=s.limit, loop=s.loop,
                           anomaly_fraction=s.anomaly_fraction, strict=s.strict,
                           schema=RecordSchema.load(s.schema_name))
    if not s.data.exists():
        raise RecordFormatError(f"data file {s.data} does not exist; pass {ProducerSettings.describe('data')}")
    conf = s.kafka.client_config()
    log.info("replaying %s to %s on %s", s.data, s.topic, redacted(conf))
    metadata = check_connection(conf, s.kafka.connect_timeout_s)
    ensure_topic(conf, s.topic, s.partitions, s.replication_factor, metadata=metadata)
    require(conf, s.acls(), "the replay")
    metrics = None
    if s.metrics_port is not None:
        metrics = ProducerMetrics()
        metrics.serve(s.metrics_port)
    return Replayer(conf, s.topic, source, rate=s.rate, progress=s.progress, metrics=metrics,
                    label_header=s.label_header, speedup=s.speedup,
                    event_span=(s.event_rate, s.limit or 0) if s.event_rate else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        settings = cli.from_namespace(ProducerSettings, args)
        replayer = _replayer(settings)
    except (SettingsError, SchemaError, RecordFormatError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    except Exception as exc:  # noqa: BLE001 - e.g. KafkaException: authentication, unreachable cluster
        log.error("cannot start the replay: %s", exc)
        return 1

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: flushing records in flight", signal.Signals(signum).name)
        replayer.stop_event.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        result = replayer.run()
    except RecordFormatError as exc:
        log.error("%s", exc)
        print(json.dumps(replayer.result.summary()))
        return 2
    summary = result.summary()
    log.info("sent %d, delivered %d, failed %d, %d malformed lines skipped, %.0f records/s", result.sent,
             result.delivered, result.failed, result.source.malformed, result.rate)
    print(json.dumps(summary))
    if replayer.denied is not None:
        log.error("%s", access_denied(replayer.config, replayer.denied, "producer", settings.topic))
        return 3
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
