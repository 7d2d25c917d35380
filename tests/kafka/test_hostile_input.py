"""Hostile input, in process (a fuzz run over the parser and scorer) and through the real topic.

The contract: the detector never crashes, and every message is either scored or dead-lettered with a
reason. Counted, not sampled.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from core import wire
from core.records import read_records
from core.schema import kdd99
from model.bundle import load_bundle
from testkit import DetectorProcess, alert_docs, drain, offline_alert_ids, wait_until
from tests.conftest import TopicFactory
from tests.hostile import KINDS, hostile_values

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def rows(kdd_path: Path):  # noqa: ANN201
    return read_records(kdd_path, limit=5000, keep_raw=True)


def good_lines(data) -> list[str]:  # noqa: ANN001
    return [data.payload(line) for line in data.raw]


def test_fuzz_parser_and_scorer(rows, small_bundle: Path) -> None:  # noqa: ANN001
    """60,000 hostile values in random batch sizes: every one accounted for, no parser failure, and whatever
    parses is in range and scores to a finite number."""
    scorer = load_bundle(small_bundle).scorer()
    values = list(hostile_values(seed=1, n=60_000, good=good_lines(rows)))
    rng = random.Random(2)
    scored = rejected = 0
    start = 0
    while start < len(values):
        size = rng.choice([1, 7, 100, 2000])
        batch = [v for _, v in values[start:start + size]]
        start += size
        parsed = wire.Parser(kdd99()).parse_safe(batch)
        assert sorted(parsed.index.tolist() + [r.index for r in parsed.rejections]) == list(range(len(batch)))
        assert not [r for r in parsed.rejections if r.code == wire.PARSER_ERROR], "the parser raised"
        assert all(r.code in wire.REASONS and r.detail for r in parsed.rejections)
        if len(parsed.index):
            assert np.isfinite(parsed.numeric).all() and (parsed.numeric >= 0).all()
            assert (parsed.numeric <= kdd99().bounds()[1]).all()
            ids, _ = scorer.preprocessor.encode_category_columns(parsed.categories)
            assert np.isfinite(scorer.score_arrays(parsed.numeric.astype(np.float32), ids).score).all()
        scored += len(parsed.index)
        rejected += len(parsed.rejections)
    assert scored + rejected == len(values) and rejected > 0.9 * len(values)


def test_hostile_messages_through_the_topic(kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path,
                                            rows, tmp_path: Path) -> None:  # noqa: ANN001
    from confluent_kafka import Producer

    hostile = list(hostile_values(seed=3, n=6000, good=good_lines(rows)))
    topic, alerts, dlq = make_topic("fuzz", partitions=2), make_topic("fuzz-alerts", 2), make_topic("fuzz-dlq", 2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "linger.ms": 10,
                         "message.max.bytes": 2_000_000})
    messages: dict[str, bytes] = {}
    good = good_lines(rows)
    for i in range(max(len(hostile), len(good))):  # interleaved: hostile values share batches with good rows
        if i < len(good):
            messages[f"ok-{rows.record_ids[i]}"] = good[i].encode()
        if i < len(hostile):
            messages[f"h-{i}-{hostile[i][0]}"] = hostile[i][1]
    for key, value in messages.items():
        producer.produce(topic, value=value, key=key.encode(), headers=[("record_id", key.encode())])
        producer.poll(0)
    assert producer.flush(60) == 0
    total = len(messages)

    # What the parser says about each value on its own: the reason it must arrive with in the DLQ.
    offline = wire.Parser(kdd99()).parse_safe(list(messages.values()))
    keys = list(messages)
    want_dead = {keys[r.index]: r.code for r in offline.rejections}
    assert not any(k.startswith("ok-") for k in want_dead)

    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, dlq_topic=dlq, log_path=tmp_path / "d.log")
    with det:
        wait_until(lambda: det.total("detector_records_consumed_total") >= total, 180, "every message handled")
        assert det.alive() and det.get("/healthz")[0] == 200  # never crashed
        scored, dead = det.total("detector_records_scored_total"), det.total("detector_dead_letters_total")
        assert det.total("detector_records_consumed_total") == total
        assert scored + dead == total  # every message: scored or dead-lettered
        assert dead == len(want_dead)
        assert det.stop() == 0

    dead_msgs = drain(kafka_bootstrap, dlq, len(want_dead))
    got_dead = {m.key().decode(): {k: v for k, v in m.headers()} for m in dead_msgs}
    assert {k: h["dlq.reason"].decode() for k, h in got_dead.items()} == want_dead
    for m in dead_msgs:
        assert m.value() == messages[m.key().decode()]  # the original bytes, for the analyst
        assert m.headers() and dict(m.headers())["dlq.detail"]

    expected, _ = offline_alert_ids(small_bundle, rows)
    docs = alert_docs(drain(kafka_bootstrap, alerts, len(expected)))
    good_alerted = {int(d["record_id"].removeprefix("ok-")) for d in docs if d["record_id"].startswith("ok-")}
    assert good_alerted == expected  # good rows beside hostile ones are scored exactly as alone
    for d in docs:
        assert np.isfinite(d["score"])
    by_kind = Counter(k.split("-", 2)[2] for k in want_dead)
    tried = Counter(k for k, _ in hostile)
    print(f"fuzz through Kafka: {total} messages ({len(hostile)} hostile of {len(KINDS)} kinds), "
          f"{int(scored)} scored, {int(dead)} dead-lettered, 0 lost; dead by kind "
          + json.dumps({k: f"{by_kind[k]}/{tried[k]}" for k in KINDS}))


def test_oversized_outputs_never_stop_the_detector(kafka_bootstrap: str, make_topic: TopicFactory,
                                                   small_bundle: Path, rows, tmp_path: Path) -> None:  # noqa: ANN001
    """The record that crash-looped a partition (a 170 KB label header of control characters: a 1 MB alert once
    JSON-escaped), and a 920 KB unparseable value with 10 headers of 8 KB (its dead letter, value kept whole, is
    over the 900 KB output limit; the input itself is under the broker's 1 MB), between good rows: the detector
    stays up, the first is alerted with its label cut, the second becomes an output_too_large dead letter with its
    coordinates, and every good row is handled as before."""
    topic, alerts, dlq = make_topic("big-in", 1), make_topic("big-alerts", 1), make_topic("big-dlq", 1)
    good = good_lines(rows)[:500]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.max.bytes": 2_000_000})
    errors: list[object] = []
    flagged, _ = offline_alert_ids(small_bundle, rows)
    attack = next(i for i, rid in enumerate(rows.record_ids) if int(rid) in flagged)  # a row the model alerts on
    hostile_label = [("record_id", b"label-bomb"), ("label", b"\x01" * 170_000)]
    producer.produce(topic, value=good_lines(rows)[attack].encode(), key=b"label-bomb", headers=hostile_label)
    producer.produce(topic, value=b"\xff" * 920_000, key=b"huge", headers=[(f"h{i}", b"y" * 8_000) for i in range(10)],
                     on_delivery=lambda err, _m: errors.append(err) if err else None)
    for i, line in enumerate(good):
        producer.produce(topic, value=line.encode(), key=f"ok-{rows.record_ids[i]}".encode(),
                         headers=[("record_id", f"ok-{rows.record_ids[i]}".encode())])
    assert producer.flush(60) == 0 and not errors, errors
    det = DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, dlq_topic=dlq, log_path=tmp_path / "d.log")
    with det:
        wait_until(lambda: det.total("detector_records_consumed_total") >= 2 + len(good), 180, "every record handled")
        assert det.alive() and det.get("/healthz")[0] == 200
        assert det.total("detector_outputs_too_large_total") == 1
        assert det.stop() == 0
    [dead] = drain(kafka_bootstrap, dlq, 1)
    hdrs = dict(dead.headers())
    assert hdrs["dlq.reason"] == b"output_too_large" and hdrs["dlq.original_reason"]
    assert (hdrs["dlq.source.topic"], hdrs["dlq.source.partition"], hdrs["dlq.source.offset"]) == (
        topic.encode(), b"0", b"1")
    docs = alert_docs(drain(kafka_bootstrap, alerts, 1))
    bomb = [d for d in docs if d["record_id"] == "label-bomb"]
    assert bomb and bomb[0]["label"] == "\x01" * 256
