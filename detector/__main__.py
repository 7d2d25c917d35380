"""``python -m detector``: run the detector service until SIGTERM/SIGINT (see ``--help``)."""

from __future__ import annotations

import logging
import os
import signal
import sys

from detector.config import ConfigError, build_parser, from_args

log = logging.getLogger("detector")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("DETECTOR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        config = from_args(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2

    from detector.service import Detector, FatalError
    from producer.kafka_options import KafkaConnectError
    from training.bundle import BundleError

    try:
        detector = Detector(config)
    except BundleError as exc:
        log.error("%s", exc)
        return 2

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing the current batch, then leaving the group", signal.Signals(signum).name)
        detector.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        detector.run()
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    except FatalError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken
        log.error("cannot run the detector: %s", exc)
        return 1
    log.info("stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
