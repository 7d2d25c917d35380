"""A service's HTTP endpoints: ``/metrics`` for Prometheus, ``/healthz`` (process alive) and ``/readyz``
(ready to work, e.g. model loaded and partitions assigned) for orchestrators. Shared by the detector and the
incident service."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 5.0


class HealthServer:
    """``/metrics``, ``/healthz`` (process alive) and ``/readyz`` (model loaded, partitions assigned)."""

    def __init__(self, registry: CollectorRegistry, port: int, ready: Callable[[], tuple[bool, str]],
                 host: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod

        class Handler(BaseHTTPRequestHandler):
            # a client that connects and sends nothing (or a byte a minute) is dropped after this many seconds
            # instead of holding a thread for good: the endpoints are reachable by anything on the network
            timeout = READ_TIMEOUT_S

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._send(200, b"ok\n")
                elif path == "/readyz":
                    ok, why = ready()
                    self._send(200 if ok else 503, (why + "\n").encode())
                else:
                    self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # scrapes are not log lines
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self.thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics (health: /healthz, /readyz)", self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
