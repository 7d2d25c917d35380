#!/usr/bin/env python3
"""Start real Apache Kafka brokers on 127.0.0.1 without Docker.

Every Kafka behaviour in this project is tested against the same broker users run. These machines have
Java and Maven but no Docker engine and no Apache download site, so the broker jars come from Maven
Central (``org.apache.kafka:kafka_2.13``) into a cache outside the clone, and the broker runs in KRaft
mode: one combined broker+controller, or a three-node quorum for replication tests.

Shell use::

    python deploy/kafka/local_kafka.py start [--nodes N] [--dir DIR]   # last line: KAFKA_BOOTSTRAP_SERVERS=...
    python deploy/kafka/local_kafka.py status --dir DIR
    python deploy/kafka/local_kafka.py stop --dir DIR

Library use (tests, demo): :func:`start_cluster` returns a :class:`LocalKafka` whose nodes can be stopped
and restarted one by one. Only the standard library is needed to start a broker; readiness is checked
with confluent-kafka's AdminClient, because an open port does not mean a broker that serves metadata.

Where Maven is absent but a Docker engine answers, the broker runs in a container via testcontainers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("local_kafka")

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
# Kafka 4.x logs through SLF4J 1.7 but its POM ships no binding; without one the broker is silent.
SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
DOCKER_IMAGE = "apache/kafka:" + KAFKA_VERSION
STATE_FILE = "cluster.json"
READY_TIMEOUT_S = float(os.environ.get("LOCAL_KAFKA_READY_TIMEOUT_S", "120"))


class LocalKafkaError(RuntimeError):
    """The local broker could not be fetched, started, or found."""


# --------------------------------------------------------------------------------------------- jars
def cache_dir() -> Path:
    """Jar cache shared by every clone on this machine (CI starts on a bare clone, the cache survives)."""
    base = os.environ.get("LOCAL_KAFKA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kdd-stream-detector"
    )
    return Path(base) / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}"


_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-broker-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>{bg}</groupId><artifactId>{ba}</artifactId><version>{bv}</version></dependency>
  </dependencies>
</project>
"""


def ensure_jars() -> Path:
    """Return the directory holding the broker classpath, fetching it with Maven on first use."""
    libs = cache_dir() / "libs"
    marker = cache_dir() / ".complete"
    if marker.exists() and any(libs.glob("kafka_*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "Maven ('mvn') is not on PATH, so the Kafka broker jars cannot be fetched. Install Maven and "
            "Java 17+ (apt-get install maven openjdk-17-jre-headless), or start a Docker engine, or point "
            "KAFKA_BOOTSTRAP_SERVERS at an existing cluster."
        )
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kafka-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(
            _POM.format(
                scala=SCALA_VERSION, kafka=KAFKA_VERSION, bg=SLF4J_BINDING[0], ba=SLF4J_BINDING[1],
                bv=SLF4J_BINDING[2],
            )
        )
        staging = cache_dir() / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("fetching Apache Kafka %s broker jars from Maven Central into %s", KAFKA_VERSION, libs)
        cmd = [
            mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies", "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise LocalKafkaError(f"Maven could not fetch the Kafka {KAFKA_VERSION} jars:\n{tail}")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
    marker.write_text(KAFKA_VERSION)
    return libs


_TOOLS_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>kafka-tools-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId>
      <version>{kafka}</version></dependency>
  </dependencies>
</project>
"""


def ensure_tool_jars() -> Path:
    """The command-line tools' classpath (kafka-topics.sh's TopicCommand), for the Kafka image only.

    Kept apart from the broker's: with kafka-tools and its Connect and Jetty dependencies on the broker's
    classpath, produce-to-alert latency at 10,000 records/s showed stalls of 300-500 ms every few seconds
    (p99 near 400 ms instead of 60-70 ms), measured with both this and the previous detector code.
    """
    tools = cache_dir() / "tools-libs"
    if any(tools.glob("kafka-tools-[0-9]*.jar")):
        return tools
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("Maven ('mvn') is not on PATH, so the Kafka tool jars cannot be fetched.")
    with tempfile.TemporaryDirectory(prefix="kafka-tools-pom-") as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_TOOLS_POM.format(kafka=KAFKA_VERSION))
        staging = cache_dir() / "tools-libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run([mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
                               "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalKafkaError(f"Maven could not fetch kafka-tools {KAFKA_VERSION}:\n"
                                  f"{(proc.stdout + proc.stderr)[-3000:]}")
        shutil.rmtree(tools, ignore_errors=True)
        staging.rename(tools)
    return tools


# ------------------------------------------------------------------------------------------- config
def free_port() -> int:
    """A port the kernel considers free now; good enough on a single-user test machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Node:
    node_id: int
    broker_port: int
    controller_port: int
    directory: str
    pid: int | None = None

    @property
    def config_path(self) -> Path:
        return Path(self.directory) / "server.properties"

    @property
    def log_path(self) -> Path:
        return Path(self.directory) / "broker.log"


_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = stdout
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = INFO
"""


@dataclasses.dataclass(frozen=True)
class Security:
    """An authenticated client listener: SASL/SCRAM-SHA-512 users, optionally over TLS.

    The broker's own inter-broker connections authenticate as ``broker_user`` on the same listener, so
    there is no unauthenticated path to the data; only the KRaft controller listener stays plaintext on
    127.0.0.1 (it serves no client requests). Users are created at format time (``--add-scram``), which
    KRaft needs because the broker must authenticate to itself before it can serve any admin request.
    """

    users: dict[str, str]
    broker_user: str = "broker"
    tls: bool = False
    mechanism: str = "SCRAM-SHA-512"
    # Kafka's standard authorizer (StandardAuthorizer, KRaft's): only the broker user is a super user, every
    # other user can do exactly what an ACL allows. The controller listener's principal (ANONYMOUS, plaintext
    # on 127.0.0.1) is a super user too, as Kafka's docs require for it; no client reaches that listener.
    authorizer: bool = False

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"


def _listener_properties(node: Node, security: Security | None, tls_dir: Path | None) -> dict[str, str]:
    if security is None:
        return {
            "listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.broker_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
        }
    proto = security.protocol
    mech = security.mechanism
    password = security.users[security.broker_user]
    props = {
        "listeners": f"{proto}://127.0.0.1:{node.broker_port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"{proto}://127.0.0.1:{node.broker_port}",
        "listener.security.protocol.map": f"{proto}:{proto},CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": proto,
        "sasl.enabled.mechanisms": mech,
        "sasl.mechanism.inter.broker.protocol": mech,
        f"listener.name.{proto.lower()}.{mech.lower()}.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{security.broker_user}" password="{password}";',
    }
    if security.authorizer:
        props.update({
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:{security.broker_user};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        })
    if security.tls:
        assert tls_dir is not None
        props.update({
            "ssl.keystore.location": str(tls_dir / "broker.p12"),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.password": _TLS_STORE_PASSWORD,
            "ssl.truststore.location": str(tls_dir / "truststore.p12"),
            "ssl.truststore.type": "PKCS12",
            "ssl.truststore.password": _TLS_STORE_PASSWORD,
            "ssl.client.auth": "none",
        })
    return props


# Protects only throwaway key stores under the cluster's own directory, deleted with it.
_TLS_STORE_PASSWORD = "local-kafka-test-store"  # noqa: S105


def _make_tls_material(directory: Path) -> Path:
    """A self-signed certificate for 127.0.0.1/localhost (keytool, which ships with the JRE).

    Returns the CA file clients pass as ``ssl.ca.location``; hostname verification stays on.
    """
    keytool = shutil.which("keytool")
    if keytool is None:
        raise LocalKafkaError("'keytool' (from the Java runtime) is needed to make a TLS certificate; install Java 17+")
    directory.mkdir(parents=True, exist_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", _TLS_STORE_PASSWORD]
    steps = [
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "30",
         "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-keystore",
         str(directory / "broker.p12"), *store],
        ["-exportcert", "-rfc", "-alias", "broker", "-keystore", str(directory / "broker.p12"), "-file",
         str(directory / "ca.pem"), *store],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(directory / "ca.pem"), "-keystore",
         str(directory / "truststore.p12"), *store],
    ]
    for args in steps:
        proc = subprocess.run([keytool, *args], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise LocalKafkaError(f"keytool {args[0]} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return directory / "ca.pem"


def _server_properties(node: Node, nodes: list[Node], extra: dict[str, str], security: Security | None = None,
                       tls_dir: Path | None = None) -> str:
    n = len(nodes)
    rf = 1 if n == 1 else 3
    isr = 1 if n == 1 else 2
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        **_listener_properties(node, security, tls_dir),
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(Path(node.directory) / "data"),
        "num.partitions": "1",
        "default.replication.factor": str(rf),
        "min.insync.replicas": str(isr),
        "offsets.topic.replication.factor": str(rf),
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(rf),
        "transaction.state.log.min.isr": str(isr),
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": str(rf),
        "share.coordinator.state.topic.min.isr": str(isr),
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    if n == 1:
        props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{node.controller_port}"
    else:
        props["controller.quorum.voters"] = ",".join(
            f"{m.node_id}@127.0.0.1:{m.controller_port}" for m in nodes
        )
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


# ------------------------------------------------------------------------------------------ cluster
@dataclasses.dataclass
class LocalKafka:
    """A running set of local brokers, persisted to ``DIR/cluster.json`` so another process can stop it."""

    directory: str
    nodes: list[Node]
    cluster_id: str
    container_id: str | None = None
    container_bootstrap: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    ssl_ca_location: str | None = None
    # (user, password) the launcher itself uses on a secured cluster; kept in cluster.json beside the data
    admin_credentials: tuple[str | None, str | None] = dataclasses.field(default=(None, None), repr=False)

    @property
    def bootstrap_servers(self) -> str:
        if self.container_bootstrap:
            return self.container_bootstrap
        return ",".join(f"127.0.0.1:{n.broker_port}" for n in self.nodes)

    # -- persistence
    def save(self) -> None:
        Path(self.directory, STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> LocalKafka:
        path = Path(directory, STATE_FILE)
        if not path.exists():
            raise LocalKafkaError(f"no local Kafka cluster recorded in {path}; was it started with --dir {directory}?")
        raw = json.loads(path.read_text())
        raw["nodes"] = [Node(**n) for n in raw["nodes"]]
        return cls(**raw)

    # -- node control (used by fault tests)
    def start_node(self, index: int) -> None:
        node = self.nodes[index]
        libs = ensure_jars()
        logf = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            proc = subprocess.Popen(
                _java_cmd(libs, node) + ["kafka.Kafka", str(node.config_path)],
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it; stopped by pid later
            )
        finally:
            logf.close()
        node.pid = proc.pid
        self.save()

    def stop_node(self, index: int, *, kill: bool = False, timeout_s: float = 30.0) -> None:
        node = self.nodes[index]
        if node.pid is not None:
            _terminate(node.pid, kill=kill, timeout_s=timeout_s)
        node.pid = None
        self.save()

    def node_alive(self, index: int) -> bool:
        pid = self.nodes[index].pid
        return pid is not None and _alive(pid)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S, expect_brokers: int | None = None) -> None:
        """Block until an AdminClient lists topics and sees ``expect_brokers`` brokers, or raise with logs."""
        from confluent_kafka.admin import AdminClient

        want = len(self.nodes) if expect_brokers is None else expect_brokers
        deadline = time.monotonic() + timeout_s
        admin = AdminClient({**self.client_config(*self.admin_credentials), "log_level": 0})
        last_err: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.pid is not None and not _alive(node.pid):
                    raise LocalKafkaError(
                        f"Kafka node {node.node_id} exited during start-up; last log lines of {node.log_path}:\n"
                        + _tail(node.log_path)
                    )
            try:
                md = admin.list_topics(timeout=2)
                if len(md.brokers) >= want:
                    return
                last_err = LocalKafkaError(f"{len(md.brokers)} of {want} brokers registered")
            except Exception as exc:  # noqa: BLE001 - KafkaException while the broker boots
                last_err = exc
            time.sleep(0.2)
        tails = "\n".join(f"--- node {n.node_id} ({n.log_path}):\n{_tail(n.log_path)}" for n in self.nodes)
        raise LocalKafkaError(
            f"Kafka at {self.bootstrap_servers} was not ready within {timeout_s:.0f}s ({last_err}).\n{tails}"
        )

    def wait_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until every node serves as an unfenced broker and every partition's ISR is full: the state a
        topic can be created in and a fault test can start from (issue 31 item 19: a topic created while a
        restarted node was still fenced failed with INVALID_REPLICA_ASSIGNMENT on a loaded machine)."""
        from confluent_kafka.admin import AdminClient

        self.wait_ready(timeout_s)
        deadline = time.monotonic() + timeout_s
        admin = AdminClient({**self.client_config(*self.admin_credentials), "log_level": 0})
        waiting = "metadata"
        while time.monotonic() < deadline:
            try:
                md = admin.list_topics(timeout=5)
                brokers = {b.id for b in admin.describe_cluster(request_timeout=5).result(timeout=10).nodes}
            except Exception as exc:  # noqa: BLE001 - KafkaException while a node rejoins
                waiting = str(exc)
                time.sleep(0.2)
                continue
            short = [f"{t.topic}[{p.id}]" for t in md.topics.values() for p in t.partitions.values()
                     if len(p.isrs) < len(p.replicas)]
            if len(brokers) >= len(self.nodes) and not short:
                return
            waiting = f"{len(brokers)} of {len(self.nodes)} brokers unfenced; ISR short: {short[:5]}"
            time.sleep(0.2)
        raise LocalKafkaError(f"Kafka at {self.bootstrap_servers} not healthy within {timeout_s:.0f}s: {waiting}")

    def client_config(self, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """librdkafka settings to reach this cluster; on a secured one, as ``user`` with ``password``."""
        conf = {"bootstrap.servers": self.bootstrap_servers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf |= {"sasl.mechanism": self.sasl_mechanism, "sasl.username": user or "",
                     "sasl.password": password or ""}
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        return conf

    def reported_version(self) -> str:
        """The version the running broker printed at start-up (its AppInfoParser line), not our constant."""
        for node in self.nodes:
            match = re.search(r"Kafka version: (\S+)", _tail(node.log_path, lines=100000))
            if match:
                return match.group(1)
        return "unknown"

    def stop(self, *, remove: bool = True) -> None:
        if self.container_id:
            subprocess.run(["docker", "rm", "-f", self.container_id], capture_output=True, check=False)
        # Signal every node first: stopped one at a time, the last ones wait on a quorum that is gone.
        pids = [n.pid for n in self.nodes if n.pid is not None]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        for i in range(len(self.nodes)):
            self.stop_node(i, timeout_s=15.0)
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)


def _java_cmd(libs: Path, node: Node) -> list[str]:
    java = os.environ.get("JAVA") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    )
    if not java:
        raise LocalKafkaError("Java 17+ ('java') is not on PATH; install openjdk-17-jre-headless or set JAVA_HOME.")
    heap = os.environ.get("LOCAL_KAFKA_HEAP", "512m")
    return [
        java, "-Xms128m", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={Path(node.directory) / 'log4j2.properties'}",
        "-cp", str(libs / "*"),
    ]


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (started by another process): fall through to a signal probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie of another parent still answers kill(0); /proc says whether it is really running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _terminate(pid: int, *, kill: bool, timeout_s: float) -> None:
    _signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    while _alive(pid):
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run_java_tool(libs: Path, node: Node, *args: str) -> str:
    cmd = _java_cmd(libs, node) + ["kafka.tools.StorageTool", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LocalKafkaError(f"kafka StorageTool {' '.join(args[:1])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.stdout.strip()


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=15)
    return proc.returncode == 0


def start_cluster(
    nodes: int = 1,
    directory: str | os.PathLike[str] | None = None,
    extra_config: dict[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    security: Security | None = None,
) -> LocalKafka:
    """Format and start ``nodes`` KRaft nodes and return once all are serving metadata.

    With ``security``, the only client listener is SASL/SCRAM (over TLS when asked); readiness is then
    checked as the broker user, which also proves the credentials were created.
    """
    if nodes not in (1, 3):
        raise LocalKafkaError(f"--nodes must be 1 or 3 (a KRaft quorum on one machine), got {nodes}")
    directory = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="local-kafka-"))
    if (directory / STATE_FILE).exists():
        raise LocalKafkaError(f"{directory} already holds a cluster; stop it first (stop --dir {directory})")
    directory.mkdir(parents=True, exist_ok=True)

    if shutil.which("mvn") is None and _docker_answers():
        return _start_container(directory, nodes)

    libs = ensure_jars()
    members = [
        Node(node_id=i + 1, broker_port=free_port(), controller_port=free_port(),
             directory=str(directory / f"node-{i + 1}"))
        for i in range(nodes)
    ]
    first = members[0]
    Path(first.directory).mkdir(parents=True, exist_ok=True)
    (Path(first.directory) / "log4j2.properties").write_text(_LOG4J2)
    cluster_id = _run_java_tool(libs, first, "random-uuid").splitlines()[-1].strip()
    cluster = LocalKafka(directory=str(directory), nodes=members, cluster_id=cluster_id)
    tls_dir = directory / "tls" if security is not None and security.tls else None
    if security is not None:
        if security.broker_user not in security.users:
            raise LocalKafkaError(f"the broker user {security.broker_user!r} needs a password in Security.users")
        cluster.security_protocol, cluster.sasl_mechanism = security.protocol, security.mechanism
        cluster.admin_credentials = (security.broker_user, security.users[security.broker_user])
        if tls_dir is not None:
            cluster.ssl_ca_location = str(_make_tls_material(tls_dir))
    for node in members:
        Path(node.directory).mkdir(parents=True, exist_ok=True)
        (Path(node.directory) / "log4j2.properties").write_text(_LOG4J2)
        node.config_path.write_text(_server_properties(node, members, extra_config or {}, security, tls_dir))
        fmt = ["format", "-t", cluster_id, "-c", str(node.config_path)]
        if nodes == 1:
            fmt.insert(1, "--standalone")
        for user, password in (security.users.items() if security else ()):
            fmt += ["--add-scram", f"{security.mechanism}=[name={user},password={password}]"]  # type: ignore[union-attr]
        _run_java_tool(libs, node, *fmt)
    cluster.save()
    try:
        for i in range(nodes):
            cluster.start_node(i)
        cluster.wait_ready(timeout_s=ready_timeout_s)
    except BaseException:
        cluster.stop(remove=False)
        raise
    return cluster


def _start_container(directory: Path, nodes: int) -> LocalKafka:
    if nodes != 1:
        raise LocalKafkaError("a 3-node cluster needs the Maven launcher (Java 17 + Maven); Docker gives one node")
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the CLI exits; `stop` removes it
    from testcontainers.kafka import KafkaContainer  # type: ignore[import-untyped]

    container = KafkaContainer(DOCKER_IMAGE).with_kraft()
    container.start()
    cluster = LocalKafka(
        directory=str(directory), nodes=[], cluster_id="container",
        container_id=container.get_wrapped_container().id,
        container_bootstrap=container.get_bootstrap_server(),
    )
    cluster.save()
    cluster.wait_ready(expect_brokers=1)
    return cluster


@contextlib.contextmanager
def bootstrap_or_local(bootstrap_servers: str | None) -> Iterator[str]:
    """Use the given cluster, or start a single local broker for the duration (benchmarks, demo)."""
    if bootstrap_servers:
        yield bootstrap_servers
        return
    cluster = start_cluster(nodes=1)
    try:
        yield cluster.bootstrap_servers
    finally:
        cluster.stop()


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="local_kafka.py",
        description=f"Run real Apache Kafka {KAFKA_VERSION} (KRaft) on 127.0.0.1 for demos and tests.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="fetch jars if needed, format storage, start brokers, wait until ready")
    p_start.add_argument("--nodes", type=int, default=int(os.environ.get("LOCAL_KAFKA_NODES", "1")),
                         help="1 (combined broker+controller) or 3 (quorum); env LOCAL_KAFKA_NODES")
    p_start.add_argument("--dir", default=os.environ.get("LOCAL_KAFKA_DIR"),
                         help="state and data directory (default: a new temporary one); env LOCAL_KAFKA_DIR")
    p_start.add_argument("--scram-user", action="append", metavar="NAME:PASSWORD",
                         default=[u for u in os.environ.get("LOCAL_KAFKA_SCRAM_USERS", "").split(",") if u],
                         help="secure the client listener with SASL/SCRAM-SHA-512 and create this user; repeatable "
                              "[env LOCAL_KAFKA_SCRAM_USERS=name:pw,name:pw]")
    p_start.add_argument("--tls", action="store_true", help="with --scram-user: SASL_SSL with a self-signed cert")
    p_start.add_argument("--acls", action="store_true",
                         default=os.environ.get("LOCAL_KAFKA_ACLS", "") not in ("", "0", "false"),
                         help="with --scram-user: Kafka's StandardAuthorizer; users other than 'broker' may do only "
                              "what ACLs allow (grant with kafka-acls.sh as 'broker') [env LOCAL_KAFKA_ACLS=1]")
    for name, help_text in (("stop", "stop the brokers and delete their files"), ("status", "show node state")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--dir", default=os.environ.get("LOCAL_KAFKA_DIR"), required="LOCAL_KAFKA_DIR" not in os.environ,
                       help="directory given to start; env LOCAL_KAFKA_DIR")
    sub.add_parser("fetch", help="only fetch the broker jars into the cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    try:
        if args.command == "fetch":
            print(ensure_jars())
            return 0
        if args.command == "start":
            t0 = time.monotonic()
            security = None
            if args.scram_user:
                users = dict(u.split(":", 1) for u in args.scram_user if ":" in u)
                if len(users) != len(args.scram_user):
                    raise LocalKafkaError("--scram-user expects NAME:PASSWORD")
                users.setdefault("broker", os.urandom(12).hex())
                security = Security(users=users, tls=args.tls, authorizer=args.acls)
            elif args.tls or args.acls:
                raise LocalKafkaError("--tls and --acls need at least one --scram-user")
            cluster = start_cluster(nodes=args.nodes, directory=args.dir, security=security)
            log.info("Apache Kafka %s: %d node(s) ready in %.1fs, state in %s",
                     KAFKA_VERSION, max(1, len(cluster.nodes)), time.monotonic() - t0, cluster.directory)
            print(f"LOCAL_KAFKA_DIR={cluster.directory}")
            if security is not None:
                print(f"KAFKA_SECURITY_PROTOCOL={cluster.security_protocol}")
                print(f"KAFKA_SASL_MECHANISM={cluster.sasl_mechanism}")
                if cluster.ssl_ca_location:
                    print(f"KAFKA_SSL_CA_LOCATION={cluster.ssl_ca_location}")
            print(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
            return 0
        cluster = LocalKafka.load(args.dir)
        if args.command == "stop":
            cluster.stop()
            print(f"stopped and removed {args.dir}")
            return 0
        # status
        up = 0
        for i, node in enumerate(cluster.nodes):
            alive = cluster.node_alive(i)
            up += alive
            print(f"node {node.node_id}: {'running' if alive else 'stopped'} pid={node.pid} "
                  f"broker=127.0.0.1:{node.broker_port} controller=127.0.0.1:{node.controller_port}")
        print(f"KAFKA_BOOTSTRAP_SERVERS={cluster.bootstrap_servers}")
        return 0 if up == len(cluster.nodes) else 3
    except LocalKafkaError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
