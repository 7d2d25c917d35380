"""Running a long-lived service from its CLI: stop on SIGTERM/SIGINT, and exit codes that mean something.

0 clean stop; 1 a fatal runtime error (restart it: state lives in Kafka); 3 Kafka unreachable, an ACL denied, or the
credentials rejected. Shared by the detector and the incident service, so they stop and fail alike.
SIGUSR1 writes every thread's Python stack to stderr (``faulthandler``, which works even while the main
thread is stuck in a C call): what to look at when a service does not stop on SIGTERM.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
from typing import Protocol

from core.kafka import KafkaConnectError


class Service(Protocol):
    stop_event: threading.Event

    def run(self) -> None: ...


def run_service(service: Service, log: logging.Logger, what: str, fatal: tuple[type[BaseException], ...]) -> int:
    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: finishing %s, then stopping", signal.Signals(signum).name, what)
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        service.run()
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    except fatal as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:  # e.g. the metrics port is taken
        log.error("cannot run: %s", exc)
        return 1
    log.info("stopped cleanly")
    return 0
