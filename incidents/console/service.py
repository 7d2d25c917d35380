"""The console as a service: its web server and its topic follower, started and stopped together."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from core.acl import require
from core.kafka import check_connection
from incidents.console.app import create_app
from incidents.console.settings import ConsoleSettings
from incidents.console.view import IncidentView, follow
from incidents.feedback import verdict_writer

log = logging.getLogger("incidents.console")


class ConsoleService:
    """The web server and the topic follower, stopped together (``core.lifecycle.run_service``): on SIGTERM, or
    when the follower cannot go on (the topic missing or denied), which then decides the exit code."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        s = self.settings
        conf = s.kafka.client_config()
        check_connection(conf, s.kafka.connect_timeout_s)
        require(conf, s.acls(), "the console")
        view = IncidentView(s.max_incidents)
        producer = verdict_writer(conf)
        sock = socket.create_server((s.host, s.port))
        server = uvicorn.Server(uvicorn.Config(create_app(s, view, producer), log_level="warning",
                                               timeout_keep_alive=5))
        web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="console-web", daemon=True)
        follower = threading.Thread(target=self._follow, args=(conf, view), name="console-follow", daemon=True)
        follower.start()
        web.start()
        host, port = sock.getsockname()[:2]
        log.info("console on http://%s:%d/ (incidents from %s)", host, port, s.incident_topic)
        self.stop_event.wait()
        server.should_exit = True
        web.join(10)
        follower.join(10)
        producer.flush(10)
        if self.failure is not None:
            raise self.failure

    def _follow(self, conf: dict[str, object], view: IncidentView) -> None:
        try:
            follow(conf, self.settings.incident_topic, view, self.stop_event)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which exits with its code
            self.failure = exc
            self.stop_event.set()
