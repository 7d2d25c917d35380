"""The services as child processes of their own CLIs, ready when ``/readyz`` says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deploy.kafka.local_kafka import free_port
from testkit.cluster import QUIET_TF, REPO, wait_until
from testkit.metrics import rss_bytes, scrape, total


# ----------------------------------------------------------------------------------------- services
class ServiceProcess:
    """A service CLI as a child process, ready when its ``/readyz`` says so."""

    name = "service"

    def __init__(self, args: list[str], port: int, log_path: Path | None = None, env: dict[str, str] | None = None,
                 inherit_output: bool = False) -> None:
        self.port = port
        self.ports = [port]  # every port that must answer /readyz (a detector's --processes serve one each)
        self.args = args
        self.log_path = log_path
        self.env = env or {}
        self.inherit_output = inherit_output
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 120, wait_ready: bool = True) -> ServiceProcess:
        if self.inherit_output:
            out: Any = None
        else:
            out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if out else None,
                                     env={**os.environ, **QUIET_TF, **self.env})
        if wait_ready:
            wait_until(lambda: self._alive_or_raise() and self.ready(), ready_timeout_s, f"{self.name} /readyz")
        return self

    def _alive_or_raise(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text()[-3000:] if self.log_path else ""
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
        return True

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port or self.port}{path}", timeout=5) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return all(self.get("/readyz", port)[0] == 200 for port in self.ports)

    def metrics(self) -> dict[str, float]:
        return scrape(self.port)

    def total(self, name: str) -> float:
        return total(self.metrics(), name)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} not started")
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            # it did not stop: its threads' stacks go to its log (core.lifecycle's SIGUSR1) before the kill
            self.proc.send_signal(signal.SIGUSR1)
            try:
                return self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class DetectorProcess(ServiceProcess):
    """``python -m detector``."""

    name = "detector"

    def __init__(self, bootstrap: str, input_topic: str, alert_topic: str, model: Path, *extra: str,
                 group: str | None = None, dlq_topic: str | None = None, log_path: Path | None = None,
                 env: dict[str, str] | None = None, inherit_output: bool = False, port: int | None = None,
                 processes: int = 1) -> None:
        port = port or free_port()
        super().__init__([sys.executable, "-m", "detector", "--bootstrap-servers", bootstrap, "--input-topic",
                          input_topic, "--alert-topic", alert_topic, "--model", str(model), "--metrics-port",
                          str(port), "--metrics-host", "127.0.0.1", "--group-id", group or f"g-{input_topic}",
                          "--processes", str(processes), *(["--dlq-topic", dlq_topic] if dlq_topic else []), *extra],
                         port, log_path, env, inherit_output)
        self.ports = [port + i for i in range(processes)]  # worker i serves on PORT + i (detector.workers)


class IncidentProcess(ServiceProcess):
    """``python -m incidents run`` on the given alert topic, with topics of its own named after it."""

    name = "incident service"

    def __init__(self, bootstrap: str, alert_topic: str, *extra: str, log_path: Path | None = None,
                 port: int | None = None, env: dict[str, str] | None = None, name: str | None = None) -> None:
        """Topics and group are named after ``name`` (default: the alert topic): several deployments can
        then read one alert topic."""
        port = port or free_port()
        name = name or alert_topic
        self.topics = {"incident": f"{name}.incidents", "feedback": f"{name}.feedback",
                       "suppressed": f"{name}.suppressed", "state": f"{name}.incidents.state",
                       "dlq": f"{name}.incidents-dlq"}
        self.group = f"inc-{name}"
        super().__init__([sys.executable, "-m", "incidents", "run", "--bootstrap-servers", bootstrap, "--alert-topic",
                          alert_topic, "--incident-topic", self.topics["incident"], "--feedback-topic",
                          self.topics["feedback"], "--suppressed-topic", self.topics["suppressed"], "--group-id",
                          self.group, "--transactional-id", f"tx-{self.group}", "--metrics-port", str(port),
                          "--metrics-host", "127.0.0.1", *extra], port, log_path, env)


class ConsoleProcess(ServiceProcess):
    """``python -m incidents console`` over an incident service's topics."""

    name = "console"

    def __init__(self, bootstrap: str, incidents: IncidentProcess, *extra: str, log_path: Path | None = None,
                 port: int | None = None, env: dict[str, str] | None = None) -> None:
        port = port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        super().__init__([sys.executable, "-m", "incidents", "console", "--bootstrap-servers", bootstrap,
                          "--incident-topic", incidents.topics["incident"], "--feedback-topic",
                          incidents.topics["feedback"], "--port", str(port), *extra], port, log_path, env)


def producer_args(bootstrap: str, topic: str, data_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "producer", "--bootstrap-servers", bootstrap, "--topic", topic, "--data",
            str(data_path), "--no-progress", *extra]


def start_replay(bootstrap: str, topic: str, data_path: Path, limit: int, rate: float, *extra: str,
                 log_path: Path | None = None, stdout: int | None = None) -> subprocess.Popen[bytes]:
    """The real replay producer CLI, paced, in the background (it must ride out the faults too)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(producer_args(bootstrap, topic, data_path, "--limit", str(limit), "--rate", str(rate),
                                          *extra),
                            cwd=REPO, stdout=stdout if stdout is not None else out, stderr=out,
                            env={**os.environ, **QUIET_TF})


def replay_summary(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Wait for a replay started with ``stdout=PIPE``; its JSON summary line."""
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the producer exited with {proc.returncode}")
    return json.loads(out.decode().strip().splitlines()[-1])
