"""Least privilege on a broker with Kafka's standard authorizer: each service, run as its own SCRAM user with
exactly the grants its settings declare (``acls()``, the README's ACL table), does its whole job; with any
one required grant taken away it exits 3 within seconds, naming the operation and the resource to grant.

The topics are created beforehand by the broker's super user, as an operator would: the optional CREATE
grants are not given, so a service that needed them would fail here.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from core.acl import Grant, required
from core.kafka_io import read_to_end
from deploy.kafka import local_kafka
from detector.settings import DetectorSettings
from incidents.console.settings import ConsoleSettings
from incidents.feedback import FeedbackSettings, VerdictListSettings
from incidents.settings import IncidentSettings
from producer.settings import ProducerSettings
from testkit import REPO, DetectorProcess, wait_until
from testkit.services import ConsoleProcess, IncidentProcess
from tests.conftest import ZEEK_LABELLED, own_cluster
from training.settings import TrainSettings

BROKER_PASSWORD = f"b-{uuid.uuid4().hex}"
ROWS = 2000
DENIED_WITHIN_S = 30  # "within seconds": start-up (imports, model load) included


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_kafka.LocalKafka]:
    # Users are created at format time; one per service and case, all with the same throwaway password.
    users = {"broker": BROKER_PASSWORD, **{u: PASSWORD for u in USERS}}
    yield from own_cluster(tmp_path_factory, "acl", security=local_kafka.Security(users=users, authorizer=True))


PASSWORD = f"pw-{uuid.uuid4().hex}"
USERS = [f"u{i}" for i in range(80)]
_free_users = iter(USERS)


def admin(cluster: local_kafka.LocalKafka) -> AdminClient:
    return AdminClient(cluster.client_config("broker", BROKER_PASSWORD))


def grant(cluster: local_kafka.LocalKafka, grants: list[Grant]) -> str:
    """A fresh user with exactly ``grants``; returns its name once the broker's authorizer holds them all."""
    user = next(_free_users)
    client = admin(cluster)
    if grants:
        for fut in client.create_acls([g.binding(f"User:{user}") for g in grants]).values():
            fut.result(timeout=30)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{user}", None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    wait_until(lambda: len(client.describe_acls(everything).result(timeout=30)) == len(grants), 30,
               f"the ACLs of {user}")
    return user


def topics(cluster: local_kafka.LocalKafka, *names: str, partitions: int = 2) -> None:
    client = admin(cluster)
    for fut in client.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1)
                                     for n in names]).values():
        fut.result(timeout=60)


def auth_args(cluster: local_kafka.LocalKafka, user: str) -> list[str]:
    return ["--bootstrap-servers", cluster.bootstrap_servers, "--security-protocol", cluster.security_protocol,
            "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", user]


def run(module: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_SASL_PASSWORD": PASSWORD, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", *module.split(), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def flags(g: Grant) -> str:
    """How a denial names the grant: the kafka-acls.sh operation and resource (a prefix grant's name begins
    the actual transactional id)."""
    return f"--operation {g.operation} --{g.resource} {g.name}"


@dataclass(frozen=True)
class Names:
    """One pipeline's topics and groups, unique per test."""

    input: str
    alerts: str
    dlq: str
    group: str

    @classmethod
    def new(cls) -> Names:
        tag = uuid.uuid4().hex[:8]
        return cls(f"in-{tag}", f"alerts-{tag}", f"in-{tag}.dlq", f"det-{tag}")


def detector_settings(n: Names, model: Path, *, exactly_once: bool = False) -> DetectorSettings:
    return DetectorSettings(input_topic=n.input, alert_topic=n.alerts, dlq_topic=n.dlq, group_id=n.group,
                            model=model, exactly_once=exactly_once)


def detector_args(cluster: local_kafka.LocalKafka, user: str, s: DetectorSettings) -> list[str]:
    return [*auth_args(cluster, user), "--input-topic", s.input_topic, "--alert-topic", s.alert_topic,
            "--dlq-topic", s.dead_letter_topic, "--group-id", s.group_id, "--model", str(s.model),
            "--metrics-port", "0", *(["--exactly-once"] if s.exactly_once else [])]


def incident_settings(alerts: str) -> IncidentSettings:
    return IncidentSettings(alert_topic=alerts, incident_topic=f"{alerts}.incidents",
                            feedback_topic=f"{alerts}.feedback", suppressed_topic=f"{alerts}.suppressed",
                            group_id=f"inc-{alerts}", transactional_id=f"tx-inc-{alerts}")


def incident_args(cluster: local_kafka.LocalKafka, user: str, s: IncidentSettings) -> list[str]:
    return [*auth_args(cluster, user), "--alert-topic", s.alert_topic, "--incident-topic", s.incident_topic,
            "--feedback-topic", s.feedback_topic, "--suppressed-topic", s.suppressed_topic, "--group-id",
            s.group_id, "--transactional-id", s.transactional_id, "--metrics-port", "0", "--idle-close-s", "1"]


def incident_topics(cluster: local_kafka.LocalKafka, s: IncidentSettings) -> None:
    """Co-partitioned with the alert topic (two partitions), as the service would create them."""
    topics(cluster, s.incident_topic, s.state, s.feedback_topic, s.suppressed_topic, s.dead_letter_topic)


def test_each_service_works_with_exactly_its_grants(cluster: local_kafka.LocalKafka, small_bundle: Path,
                                                     kdd_path: Path, tmp_path: Path) -> None:
    n = Names.new()
    topics(cluster, n.input, n.alerts, n.dlq)
    bootstrap = cluster.bootstrap_servers

    # producer
    p = ProducerSettings(topic=n.input, data=kdd_path)
    replay = run("producer", *auth_args(cluster, grant(cluster, required(p.acls()))), "--topic", n.input,
                 "--data", str(kdd_path), "--limit", str(ROWS), "--no-progress")
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert json.loads(replay.stdout.strip().splitlines()[-1])["delivered"] == ROWS

    # detector, at least once then exactly once (its own group and outputs)
    for exactly_once in (False, True):
        names = n if not exactly_once else Names(n.input, f"{n.alerts}-eos", f"{n.dlq}-eos", f"{n.group}-eos")
        if exactly_once:
            topics(cluster, names.alerts, names.dlq)
        s = detector_settings(names, small_bundle, exactly_once=exactly_once)
        user = grant(cluster, required(s.acls()))
        det = DetectorProcess(bootstrap, s.input_topic, s.alert_topic, s.model, *auth_args(cluster, user)[2:],
                              *(["--exactly-once"] if exactly_once else []), group=s.group_id,
                              dlq_topic=s.dead_letter_topic, log_path=tmp_path / f"detector-{exactly_once}.log",
                              env={"KAFKA_SASL_PASSWORD": PASSWORD})
        with det:
            wait_until(lambda det=det: det.total("detector_records_scored_total") >= ROWS, 120,
                       f"the detector (exactly once: {exactly_once}) scoring as {user}")
            alerted = det.total("detector_alerts_total")
            assert det.stop() == 0
        assert alerted > 0
        assert len(read_to_end(cluster.client_config("broker", BROKER_PASSWORD), names.alerts)) == alerted

    # incident service on the at-least-once alerts
    inc = incident_settings(n.alerts)
    incident_topics(cluster, inc)
    user = grant(cluster, required(inc.acls()))
    svc = IncidentProcess(bootstrap, n.alerts, *auth_args(cluster, user)[2:], "--idle-close-s", "1",
                          log_path=tmp_path / "incidents.log", env={"KAFKA_SASL_PASSWORD": PASSWORD})
    with svc:
        wait_until(lambda: svc.total("incidents_alerts_total") >= alerted, 60, "incidents from every alert")
        assert svc.stop() == 0
    incidents = [json.loads(m.value()) for m in read_to_end(cluster.client_config("broker", BROKER_PASSWORD),
                                                            inc.incident_topic) if m.value()]
    assert incidents

    # an analyst marks one benign (WRITE on the feedback topic), another lists verdicts (READ)
    fb = FeedbackSettings(feedback_topic=inc.feedback_topic, incident=incidents[0]["incident_id"])
    sent = run("incidents feedback", *auth_args(cluster, grant(cluster, fb.acls())), "--feedback-topic",
               inc.feedback_topic, "--incident", fb.incident, "--note", "least privilege")
    assert sent.returncode == 0, sent.stderr[-3000:]
    vl = VerdictListSettings(feedback_topic=inc.feedback_topic, state_topic=inc.state)
    listed = run("incidents verdicts", *auth_args(cluster, grant(cluster, vl.acls())), "--feedback-topic",
                 inc.feedback_topic, "--state-topic", inc.state, "--json-lines")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "least privilege" in listed.stdout

    # the console: lists the incidents and marks one benign (a plain form post, as a browser sends it)
    cs = ConsoleSettings(incident_topic=inc.incident_topic, feedback_topic=inc.feedback_topic)
    user = grant(cluster, required(cs.acls()))
    with ConsoleProcess(bootstrap, svc, *auth_args(cluster, user)[2:], log_path=tmp_path / "console.log",
                        env={"KAFKA_SASL_PASSWORD": PASSWORD}) as console:
        assert incidents[-1]["incident_id"] in console.get("/")[1]
        form = urllib.parse.urlencode({"analyst": "cy", "reason": "console", "hours": "1"}).encode()
        with urllib.request.urlopen(f"{console.url}/incidents/{incidents[-1]['incident_id']}/benign", form,
                                    timeout=30) as page:  # noqa: S310 - the redirect is followed to the detail
            assert page.status == 200 and "Marked benign by cy" in page.read().decode()
        assert console.stop() == 0
    verdicts = [json.loads(m.value()) for m in read_to_end(cluster.client_config("broker", BROKER_PASSWORD),
                                                           inc.feedback_topic)]
    # the feedback topic has a partition per alert partition, ordered within one: an incident's verdicts share one
    assert [v["analyst"] for v in verdicts if v["incident_id"] == incidents[-1]["incident_id"]][-1] == "cy"

    # retraining from the stream, leaving out what was alerted on
    t = TrainSettings(from_topic=n.input, alert_topic=n.alerts, out=tmp_path / "retrained")
    trained = run("training train", *auth_args(cluster, grant(cluster, t.acls())), "--from-topic", n.input,
                  "--records", str(ROWS), "--alert-topic", n.alerts, "--out", str(tmp_path / "retrained"),
                  "--epochs", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "retrained" / "bundle.json").exists()


def _denied(result: subprocess.CompletedProcess[str], dropped: Grant, seconds: float) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 3, f"exit {result.returncode}, not 3, without {dropped}:\n{out[-3000:]}"
    assert flags(dropped) in out, f"the message does not name {flags(dropped)!r}:\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    assert seconds < DENIED_WITHIN_S, f"took {seconds:.0f}s to fail without {dropped}"


def _without(grants: list[Grant]) -> Iterator[tuple[Grant, list[Grant]]]:
    for i, g in enumerate(grants):
        yield g, grants[:i] + grants[i + 1:]


def timed(module: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    result = run(module, *args, timeout=DENIED_WITHIN_S * 4)
    return result, time.monotonic() - t0


def test_producer_without_a_grant_exits_3_naming_it(cluster: local_kafka.LocalKafka, kdd_path: Path) -> None:
    for missing_topic in (False, True):
        n = Names.new()
        if not missing_topic:
            topics(cluster, n.input)
        p = ProducerSettings(topic=n.input, data=kdd_path)
        for dropped, rest in _without(required(p.acls())):
            result, took = timed("producer", *auth_args(cluster, grant(cluster, rest)), "--topic", n.input,
                                 "--data", str(kdd_path), "--limit", "100", "--no-progress")
            _denied(result, dropped, took)
            if missing_topic:  # nothing to write to and no right to create it: CREATE is named too
                assert f"--operation CREATE --topic {n.input}" in result.stderr


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_detector_without_a_grant_exits_3_naming_it(cluster: local_kafka.LocalKafka, small_bundle: Path,
                                                    kdd_path: Path, exactly_once: bool) -> None:
    """Records wait on the input, so a denied write shows at the first batch, not as a pause that never ends."""
    n = Names.new()
    topics(cluster, n.input, n.alerts, n.dlq)
    feeder = grant(cluster, [Grant("topic", n.input, "WRITE", "test feed")])
    fed = run("producer", *auth_args(cluster, feeder), "--topic", n.input, "--data", str(kdd_path), "--limit",
              "3000", "--no-progress")
    assert fed.returncode == 0, fed.stderr[-2000:]
    s = detector_settings(n, small_bundle, exactly_once=exactly_once)
    users = [(dropped, grant(cluster, rest)) for dropped, rest in _without(required(s.acls()))]
    # two at a time (each run is mostly its start-up): a denial must still show within DENIED_WITHIN_S
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = [(dropped, pool.submit(timed, "detector", *detector_args(cluster, user, s))) for dropped, user in users]
        for dropped, job in runs:
            result, took = job.result()
            _denied(result, dropped, took)


def test_zeek_detector_works_with_its_grants_and_names_a_missing_state_grant(cluster: local_kafka.LocalKafka,
                                                                             zeek_bundle: Path, tmp_path: Path) -> None:
    """Zeek input adds the featurizer's state topic (READ to restore, WRITE for snapshots, inside the transaction
    under exactly-once): with exactly the table's grants it scores the capture and writes snapshots; without either
    of the two it exits 3 naming it."""
    n = Names.new()
    s = detector_settings(n, zeek_bundle, exactly_once=True)
    topics(cluster, n.input, n.alerts, n.dlq, s.featurizer_state_topic)
    feeder = grant(cluster, [Grant("topic", n.input, "WRITE", "test feed")])
    fed = run("producer", *auth_args(cluster, feeder), "--topic", n.input, "--data", str(ZEEK_LABELLED), "--schema",
              "zeek_conn", "--no-progress")
    assert fed.returncode == 0, fed.stderr[-2000:]
    grants = required(s.acls(conn_state=True))
    user = grant(cluster, grants)
    det = DetectorProcess(cluster.bootstrap_servers, s.input_topic, s.alert_topic, s.model,
                          *auth_args(cluster, user)[2:], "--exactly-once", "--flush-idle-s", "2", group=s.group_id,
                          dlq_topic=s.dead_letter_topic, log_path=tmp_path / "zeek-detector.log",
                          env={"KAFKA_SASL_PASSWORD": PASSWORD})
    with det:
        wait_until(lambda: det.total("detector_records_scored_total") >= 700, 120,
                   f"the Zeek detector scoring as {user}")
        assert det.stop() == 0
    assert read_to_end(cluster.client_config("broker", BROKER_PASSWORD), s.featurizer_state_topic), "no snapshot"
    state = [g for g in grants if g.name == s.featurizer_state_topic]
    assert sorted(g.operation for g in state) == ["READ", "WRITE"]
    for dropped in state:
        rest = [g for g in grants if g != dropped]
        result, took = timed("detector", *detector_args(cluster, grant(cluster, rest), s))
        _denied(result, dropped, took)


def test_incident_service_without_a_grant_exits_3_naming_it(cluster: local_kafka.LocalKafka, kdd_path: Path
                                                            ) -> None:
    alerts = f"alerts-{uuid.uuid4().hex[:8]}"
    topics(cluster, alerts)
    s = incident_settings(alerts)
    incident_topics(cluster, s)
    for dropped, rest in _without(required(s.acls())):
        result, took = timed("incidents run", *incident_args(cluster, grant(cluster, rest), s))
        _denied(result, dropped, took)


def test_feedback_and_retraining_without_a_grant_exit_3_naming_it(cluster: local_kafka.LocalKafka,
                                                                  tmp_path: Path) -> None:
    n = Names.new()
    topics(cluster, n.input, n.alerts)
    topics(cluster, f"{n.alerts}.feedback", f"{n.alerts}.state", partitions=1)
    fb = FeedbackSettings(feedback_topic=f"{n.alerts}.feedback", incident="some-incident")
    for dropped, rest in _without(fb.acls()):
        result, took = timed("incidents feedback", *auth_args(cluster, grant(cluster, rest)), "--feedback-topic",
                             fb.feedback_topic, "--incident", fb.incident)
        _denied(result, dropped, took)
    vl = VerdictListSettings(feedback_topic=fb.feedback_topic, state_topic=f"{n.alerts}.state")
    for dropped, rest in _without(vl.acls()):
        result, took = timed("incidents verdicts", *auth_args(cluster, grant(cluster, rest)), "--feedback-topic",
                             vl.feedback_topic, "--state-topic", vl.state_topic)
        _denied(result, dropped, took)
    topics(cluster, f"{n.alerts}.incidents", partitions=1)
    cs = ConsoleSettings(incident_topic=f"{n.alerts}.incidents", feedback_topic=fb.feedback_topic,
                         state_topic=f"{n.alerts}.state")
    for dropped, rest in _without(cs.acls()):
        result, took = timed("incidents console", *auth_args(cluster, grant(cluster, rest)), "--incident-topic",
                             cs.incident_topic, "--feedback-topic", cs.feedback_topic, "--state-topic",
                             str(cs.state_topic), "--port", "0")
        _denied(result, dropped, took)
    t = TrainSettings(from_topic=n.input, alert_topic=n.alerts, out=tmp_path / "m")
    for dropped, rest in _without(t.acls()):
        result, took = timed("training train", *auth_args(cluster, grant(cluster, rest)), "--from-topic",
                             n.input, "--records", "100", "--alert-topic", n.alerts, "--out", str(tmp_path / "m"))
        _denied(result, dropped, took)
