"""The featurizer's state on Kafka: snapshots on a compacted topic, found again through the committed offset.

Why: a Zeek record's features depend on the connections before it (windows of up to 255 per host), so a
restarted detector must continue with exactly the windows the crashed one had, or its features (and alerts)
differ from the reference. A bounded replay alone cannot rebuild windows that reach back hours.

How (the detector's conn stage drives it):
- Now and then (``--state-every-s``), before offering a batch's first record of a partition, the partition's
  featurizer is written here as a snapshot: JSON, zlib-compressed, cut into chunks below the output limit, on
  the state topic's partition with the input partition's number. The snapshot goes out with that batch's
  outputs: under exactly-once inside its transaction, under at-least-once acknowledged before its offsets
  are committed.
- Every offset commit carries, in its metadata, which snapshot it continues from (``snap``), the input offset
  the snapshot was taken at (``at``) and how many records the featurizer had released (``rel``).
- A partition assigned later reads its committed offset C and that metadata, loads the snapshot, seeks to
  ``at`` and replays [at, C) through the featurizer with every output suppressed (those were written before);
  from C on it is the crashed instance, record for record.
- Two slots per partition (keys ``...:0:i`` and ``...:1:i``): a new snapshot is written only after the one
  before it was committed, so the snapshot a committed offset names is never the one being overwritten.

A snapshot that cannot be found or read (the topic was deleted, a slot overwritten by a commit that failed)
is counted (``detector_featurizer_restores_total{outcome="lost"}``) and the partition starts with empty windows:
the features of the next ``host window`` connections per host then differ from the reference, and nothing is
lost or duplicated.
"""

from __future__ import annotations

import json
import logging
import zlib
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from core.kafka import MEMORY_BOUNDS
from core.kafka_io import read_range
from detector.outputs import OutMessage

log = logging.getLogger(__name__)

SNAPSHOT_HEADER = "featurizer.snapshot"  # the snapshot's number
CHUNK_HEADER = "featurizer.chunk"  # "i/n"
VERSION = 1
MAX_CHUNK = 512 * 1024
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000", "min.cleanable.dirty.ratio": "0.1"}


def metadata(snap: int, at: int, released: int) -> str:
    """What an offset commit says of the state it continues from (Kafka keeps it with the offset)."""
    return json.dumps({"v": VERSION, "snap": snap, "at": at, "rel": released}, separators=(",", ":"))


def parse_metadata(text: str | None) -> dict[str, int] | None:
    """The commit metadata written by :func:`metadata`, or None (no commit yet, another writer, or garbage)."""
    try:
        doc = json.loads(text or "")
        if isinstance(doc, dict) and doc.get("v") == VERSION:
            return {k: int(doc[k]) for k in ("snap", "at", "rel")}
    except (ValueError, TypeError, KeyError):
        pass
    return None


class StateStore:
    def __init__(self, topic: str, client_conf: dict[str, Any], max_output_bytes: int) -> None:
        self.topic = topic
        self.conf = client_conf
        self.chunk = max(1024, min(MAX_CHUNK, max_output_bytes - 4096))  # never an output_too_large dead letter

    def encode(self, input_topic: str, partition: int, snap: int, doc: dict[str, Any]) -> list[OutMessage]:
        """A snapshot as the messages that carry it (its slot's keys, on the input partition's number)."""
        blob = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 1)  # -inf times: JSON's extension
        chunks = [blob[i:i + self.chunk] for i in range(0, len(blob), self.chunk)] or [b""]
        slot = snap % 2
        return [OutMessage(self.topic, f"{input_topic}:{partition}:{slot}:{i}".encode(), part,
                           [(SNAPSHOT_HEADER, str(snap).encode()), (CHUNK_HEADER, f"{i}/{len(chunks)}".encode())],
                           "state", partition=partition)
                for i, part in enumerate(chunks)]

    def read(self, input_topic: str, partition: int, snap: int, timeout_s: float = 120) -> dict[str, Any] | None:
        """Snapshot ``snap`` of the input partition, or None when it is not there whole."""
        prefix = f"{input_topic}:{partition}:{snap % 2}:".encode()
        wanted = str(snap).encode()

        def keep(msg: Message) -> bool:
            key = msg.key() or b""
            return key.startswith(prefix) and dict(msg.headers() or ()).get(SNAPSHOT_HEADER) == wanted

        consumer = Consumer({**MEMORY_BOUNDS, **self.conf, "group.id": f"{self.topic}-restore",
                             "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=30)
            found = read_range(consumer, self.topic, {partition: (low, high)}, timeout_s, self.conf, keep)
        finally:
            consumer.close()
        doc = assemble(found)
        if doc is None:
            log.error("featurizer snapshot %d of %s[%d] is not on %s whole, or unreadable", snap, input_topic,
                      partition, self.topic)
        return doc


def assemble(found: list[Any]) -> dict[str, Any] | None:
    """One snapshot from its chunk messages (offset order: a later copy of a chunk, a retried write, replaces the
    earlier), or None when a chunk is missing or the whole does not decode."""
    chunks: dict[int, bytes] = {}
    total = None
    for msg in found:
        try:
            i, n = dict(msg.headers() or ()).get(CHUNK_HEADER, b"").decode().partition("/")[::2]
            chunks[int(i)], total = msg.value() or b"", int(n)
        except (ValueError, UnicodeDecodeError):  # not a chunk this code wrote: the snapshot is then incomplete
            continue
    if total is None or sorted(chunks) != list(range(total)):
        return None
    try:
        doc = json.loads(zlib.decompress(b"".join(chunks[i] for i in range(total))))
    except (ValueError, zlib.error):
        return None
    return doc if isinstance(doc, dict) else None
