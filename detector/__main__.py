"""``python -m detector``: run the detector service until SIGTERM/SIGINT (see ``--help``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from core import settings as cli
from core.settings import SettingsError
from detector.settings import DetectorSettings

log = logging.getLogger("detector")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detector", description=DetectorSettings.__doc__,
        epilog="Exit codes: 0 clean shutdown; 1 fatal runtime error; 2 invalid configuration or model bundle; "
               "3 Kafka unreachable, or it rejected the credentials or TLS settings.",
    )
    cli.add_arguments(p, DetectorSettings)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        settings = cli.from_namespace(DetectorSettings, args)
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    logging.getLogger().setLevel(settings.log_level)
    if settings.processes != 1:
        from detector.workers import supervise

        return supervise(sys.argv[1:] if argv is None else argv, settings)

    from core.kafka_io import FatalError
    from core.lifecycle import run_service
    from detector.service import Detector
    from model.bundle import BundleError
    from model.store import StoreError

    try:
        detector = Detector(settings)
    except (BundleError, StoreError) as exc:
        log.error("%s", exc)
        return 2

    return run_service(detector, log, "the current batch (then leaving the group)", (FatalError,))


if __name__ == "__main__":
    sys.exit(main())
