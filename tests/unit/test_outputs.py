"""Every output bounded (no broker): a hostile input can make an alert or a dead letter large, never too large to
produce, and an output the client or the broker refuses for its size is replaced, not retried forever or fatal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from core import events
from core import headers as h
from detector.alerts import AlertBuilder
from detector.dead_letters import build_dead_letter
from detector.delivery import OutputWriter
from detector.metrics import DetectorMetrics
from detector.outputs import MAX_COPIED_HEADERS, MAX_TEXT, OUTPUT_TOO_LARGE, OutMessage, bounded

LIMIT = 900_000


class FakeMsg:
    def __init__(self, value: bytes, headers: list[tuple[str, bytes]], key: bytes | None = b"k") -> None:
        self._value, self._headers, self._key = value, headers, key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return "in"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 42

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_800_000_000_000)


class FakeProducer:
    """Refuses, as librdkafka does, any message over its message.max.bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.sent: list[tuple[str, bytes | None, list[tuple[str, bytes]] | None]] = []

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any) -> None:
        if len(value or b"") > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append((topic, value, kw.get("headers")))

    def poll(self, _timeout: float) -> int:
        return 0


def test_a_170_kb_label_header_of_control_characters_makes_a_small_alert() -> None:
    """The record that crash-looped the detector: its label, JSON-escaped, was an alert of over 1 MB."""
    builder = AlertBuilder("alerts", 0.01, "v1", scorer=None)  # type: ignore[arg-type]
    label = "\x01" * 170_000
    out = builder.alert(FakeMsg(b"row", [(h.LABEL, label.encode()), (h.RECORD_ID, b"7")]), 0.05,
                        [{"feature": "f", "error": 1.0, "observed": 1, "reconstructed": 0}], None, None, None)
    doc = json.loads(out.value)
    assert doc["label"] == label[:MAX_TEXT] and out.size < 10_000
    assert dict(out.headers)[h.LABEL] == label[:MAX_TEXT].encode()
    assert out.source == ("in", 3, 42)


def test_dead_letters_cap_copied_headers_and_count_what_was_cut() -> None:
    hdrs = [(f"h{i}", b"x" * 5_000) for i in range(40)]
    out = build_dead_letter(FakeMsg(b"garbage", hdrs), "dlq", "bad_fields", "detail")
    copied = [(k, v) for k, v in out.headers if not k.startswith(h.DLQ_PREFIX) and not events.is_event_header(k)]
    assert len(copied) == MAX_COPIED_HEADERS and all(len(v) <= 1024 for _, v in copied)
    assert dict(out.headers)[h.DLQ_HEADERS_CUT] == str(40 - MAX_COPIED_HEADERS + MAX_COPIED_HEADERS).encode()
    assert out.value == b"garbage"  # the original bytes stay whole


def test_outputs_carry_cloudevents_headers_an_input_cannot_forge() -> None:
    """Binary-mode CloudEvents: routable by headers, bodies unchanged; an input's own ce_* headers are dropped
    from its dead letter (ours stand), and an alert's id is its input record's (re-deliveries repeat it)."""
    forged = [("ce_type", b"forged"), ("content-type", b"text/evil"), ("ce_id", b"x")]
    dead = build_dead_letter(FakeMsg(b"garbage", forged), "dlq", "bad_fields", "detail")
    ce = {k: v for k, v in dead.headers if events.is_event_header(k)}
    assert [k for k, _ in dead.headers].count("ce_type") == 1 and ce["ce_type"] == events.DEAD_LETTER.encode()
    assert ce["ce_id"] == b"in/3/42" and ce["ce_specversion"] == b"1.0" and ce["content-type"] == events.BYTES.encode()
    builder = AlertBuilder("alerts", 0.01, "v1", scorer=None)  # type: ignore[arg-type]
    alert = builder.alert(FakeMsg(b"row", []), 0.05, [], "2026-12-01T00:00:00Z", None, None)
    ce = dict(alert.headers)
    assert ce["ce_type"] == events.ALERT.encode() and ce["ce_id"] == b"in/3/42/v1"
    assert ce["ce_time"] == b"2026-12-01T00:00:00Z" and ce["content-type"] == b"application/json"
    assert json.loads(alert.value)["schema"] == "kdd-alert/1"  # the body is the alert document, as before


def test_an_output_over_the_limit_becomes_a_coordinates_only_dead_letter() -> None:
    big = OutMessage("dlq", b"k", b"v" * (LIMIT + 1), [], "dead_letter", reason="bad_fields", source=("in", 3, 42))
    small = OutMessage("alerts", b"k", b"{}", [], "alert", source=("in", 1, 2))
    assert bounded(small, "dlq", LIMIT) is small
    out = bounded(big, "dlq", LIMIT)
    hdrs = dict(out.headers)
    assert out.value == b"" and out.reason == OUTPUT_TOO_LARGE and out.topic == "dlq"
    assert hdrs[h.DLQ_SOURCE_TOPIC] == b"in" and hdrs[h.DLQ_SOURCE_PARTITION] == b"3"
    assert hdrs[h.DLQ_SOURCE_OFFSET] == b"42" and hdrs[h.DLQ_ORIGINAL_REASON] == b"bad_fields"


@pytest.mark.parametrize("client_max", [LIMIT + 10_000, 50_000])
def test_the_writer_never_produces_what_the_client_refuses(client_max: int) -> None:
    """Within the limit the client may still refuse (its own message.max.bytes set lower): the output is replaced
    by its output_too_large dead letter at once, counted, and nothing raises."""
    producer = FakeProducer(client_max)
    metrics = DetectorMetrics(0.01)
    writer = OutputWriter(producer, metrics, "dlq", LIMIT)  # type: ignore[arg-type]
    outs = [OutMessage("alerts", b"a", b"x" * 100, [], "alert", source=("in", 0, 1)),
            OutMessage("dlq", b"b", b"y" * 200_000, [], "dead_letter", reason="bad_fields", source=("in", 0, 2)),
            OutMessage("dlq", b"c", b"z" * (LIMIT + 5), [], "dead_letter", reason="bad_fields", source=("in", 0, 3))]
    writer.produce_all(outs, lambda err, out: None)
    assert len(producer.sent) == 3
    assert all(len(v or b"") <= min(client_max, LIMIT) for _, v, _ in producer.sent)
    reasons = [dict(hd or [])[h.DLQ_REASON] if hd else None for _, _, hd in producer.sent]
    assert reasons[2] == OUTPUT_TOO_LARGE.encode()
    assert (reasons[1] == OUTPUT_TOO_LARGE.encode()) == (client_max < 200_000)


def test_a_broker_refusal_for_size_is_replaced_and_a_passing_outage_is_retried() -> None:
    writer = OutputWriter(FakeProducer(LIMIT), DetectorMetrics(0.01), "dlq", LIMIT)  # type: ignore[arg-type]
    out = OutMessage("alerts", b"a", b"{}", [], "alert", source=("in", 0, 9))
    stand_in = writer.replacement(out, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert stand_in is not None and stand_in.reason == OUTPUT_TOO_LARGE
    assert writer.replacement(out, KafkaError(KafkaError._MSG_TIMED_OUT)) is None
    assert writer.replacement(stand_in, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) is None


def test_every_librdkafka_sensitive_setting_is_redacted() -> None:
    """librdkafka's src/rdkafka_conf.c flags these _RK_SENSITIVE; none may reach a log line."""
    from core.kafka import SECRET_KEYS, redacted

    sensitive = {"sasl.username", "sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret",
                 "sasl.oauthbearer.assertion.private.key.file", "sasl.oauthbearer.assertion.private.key.passphrase",
                 "sasl.oauthbearer.assertion.private.key.pem", "ssl.key.location", "ssl.key.password", "ssl.key.pem",
                 "ssl_key", "ssl.keystore.password", "ssl.ca.pem"}
    assert sensitive <= SECRET_KEYS
    conf = {k: "hunter2" for k in sensitive} | {"bootstrap.servers": "b:9092", "ssl.ca.location": "/ca.pem"}
    shown = redacted(conf)
    assert "hunter2" not in json.dumps(shown)
    assert shown["bootstrap.servers"] == "b:9092" and shown["ssl.ca.location"] == "/ca.pem"


def test_the_metrics_endpoint_drops_a_client_that_sends_nothing() -> None:
    """A silent connection is closed after the read timeout; the endpoint keeps answering others."""
    import socket
    import time
    import urllib.request

    from prometheus_client import CollectorRegistry

    from core import health
    from deploy.kafka.local_kafka import free_port

    port = free_port()
    server = health.HealthServer(CollectorRegistry(), port, lambda: (True, "ok"), host="127.0.0.1")
    server.start()
    try:
        idle = socket.create_connection(("127.0.0.1", port))
        idle.settimeout(health.READ_TIMEOUT_S + 10)
        t0 = time.monotonic()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200  # noqa: S310
        assert idle.recv(1) == b""  # the server closed it
        assert time.monotonic() - t0 < health.READ_TIMEOUT_S + 5
    finally:
        server.stop()
