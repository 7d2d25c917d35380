"""The detector service: wires the stages and runs the loop, one micro-batch at a time.

    source (consume) -> parse -> score -> decide (core.decision) -> sinks (alerts, dead letters)
                                                                   -> checkpoint (commit contract)

The model in force (``LiveModel``) is swapped between two batches when the model store's pointer moves
(``ModelWatcher`` verifies the new bundle on its own thread first); each alert names the version that
scored it.

Batches are processed synchronously between ``consume()`` calls, so a rebalance (whose callbacks run
inside ``consume()``) never interrupts a half-done batch. The stages know nothing of each other; this
module is the only one that knows the order.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata

from core import poison
from core.acl import require
from core.decision import flagged_rows
from core.health import HealthServer
from core.heap import freeze_long_lived
from core.kafka import admin_config, check_connection, ensure_topic, redacted
from core.poison import Skipped
from core.wire import Parser
from detector.accounting import account
from detector.checkpoint import AtLeastOnce, Checkpoint, ExactlyOnce
from detector.clients import AuthWatch, client_configs
from detector.conn_stage import ConnBatch, ConnStage
from detector.conn_state import TOPIC_CONFIG
from detector.dead_letters import dead_letters, skipped_dead_letters
from detector.delivery import OutputWriter
from detector.drift import DriftMonitor
from detector.evaluation import LabelTally
from detector.input_source import InputBatch, InputSource
from detector.live_model import LiveModel, load_live
from detector.metrics import DetectorMetrics
from detector.model_watch import ModelWatcher
from detector.recalibration import Thresholds
from detector.settings import DetectorSettings
from detector.shadow import Shadow
from model import backend, store

log = logging.getLogger(__name__)


class Detector:
    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        backend.limit_threads(settings.scoring_threads)  # imports the backend's runtime: the freeze covers it
        freeze_long_lived()  # the runtime leaves the collector's full passes; models do not (core.heap says why)
        self.live: LiveModel = self._load(store.resolve(settings.model), same_schema=False)
        self.schema = self.live.bundle.schema
        self.parser = Parser(self.schema, settings.max_message_bytes)
        self.labels = LabelTally(self.schema)
        self.metrics = DetectorMetrics(self.live.threshold)
        self.device = backend.device()
        self.metrics.describe_model(self.live.bundle.manifest, self.live.threshold)
        self.shadow = (Shadow(self._load(settings.shadow_model), self.metrics, topic=settings.shadow_topic)
                       if settings.shadow_model is not None else None)
        self.drift = self._drift_monitor(self.live)
        self.thresholds = Thresholds(settings, self.metrics, self.live)
        self.watcher: ModelWatcher | None = None
        if settings.model_poll_s > 0 and store.is_store(settings.model):
            self.watcher = ModelWatcher(settings.model, self.live.path, self._load, settings.model_poll_s,
                                        self.metrics)
        self.metrics.device.info({"device": self.device, "backend": backend.name()})
        self.stop_event = threading.Event()
        self.auth = AuthWatch(settings.kafka.client_config(), settings.kafka.connect_timeout_s)
        self.in_batch = False
        self.warmed = False
        self.server: HealthServer | None = None
        self.source: InputSource | None = None
        self.producer: Producer | None = None
        self.checkpoint: Checkpoint | None = None
        self.outputs_ready = False
        self.conns: ConnStage | None = None  # Zeek input: the featurizer stage (start() builds it)

    def _load(self, path: Path, same_schema: bool = True) -> LiveModel:
        """A verified model with the operator's threshold choice applied (the same for every model); after the
        first, every model must read the same record schema."""
        s = self.settings
        return load_live(path, s.alert_topic, self.schema if same_schema else None, target_fpr=s.target_fpr,
                         threshold=s.threshold, batch_size=s.batch_size)

    def ready(self) -> tuple[bool, str]:
        if not self.warmed:
            return False, "model loading"
        if self.source is None or not self.source.assigned:
            return False, "no partitions assigned"
        if self.checkpoint is not None and self.checkpoint.blocked:
            return False, f"outputs blocked ({self.checkpoint.blocked}): input paused, retrying"
        return True, f"ready: model {self.live.version}, {len(self.source.assigned)} partition(s)"

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        s = self.settings
        admin_conf = s.kafka.client_config()
        metadata = check_connection(admin_conf, s.kafka.connect_timeout_s)
        consumer_conf, producer_conf = client_configs(s, self.metrics.observe_stats)
        consumer_conf["on_commit"] = _on_commit
        for conf in (consumer_conf, producer_conf):
            conf["error_cb"] = self.auth.on_client_error
        log.info("consumer %s", redacted({k: v for k, v in consumer_conf.items()
                                           if k not in ("stats_cb", "error_cb", "on_commit")}))
        self.server = HealthServer(self.metrics.registry, s.metrics_port, self.ready, host=s.metrics_host)
        self.server.start()
        self.producer = Producer(producer_conf)
        if self.schema.zeek_conn:
            self.conns = ConnStage.of(s, self.schema, admin_conf, self.metrics)
        self._ensure_output_topics(admin_conf, metadata)
        require(admin_conf, s.acls(conn_state=self.conns is not None), "the detector")
        self.source = InputSource(consumer_conf, s.input_topic, self.metrics, self._on_revoke, self._update_ready,
                                  self.conns.assign if self.conns is not None else None)
        consumer = self.source.open()
        writer = OutputWriter(self.producer, self.metrics, s.dead_letter_topic, s.max_output_bytes,
                              {**producer_conf, "group.id": s.group_id})
        if s.exactly_once:
            self.checkpoint = ExactlyOnce(consumer, self.producer, writer, self.metrics, self.stop_event,
                                          s.retry_backoff_max_s)
        else:
            self.checkpoint = AtLeastOnce(consumer, self.producer, writer, self.metrics, self.stop_event,
                                          s.retry_backoff_max_s, lambda: self.in_batch, lambda: self.source_assigned)
        self.warmed = True  # load_live traced the scoring function
        self._update_ready()
        if self.watcher is not None:
            self.watcher.start()
        log.info("model %s (threshold %.6g) ready on %s (Keras backend %s)", self.live.version, self.live.threshold,
                 self.device, backend.name())

    @property
    def source_assigned(self) -> set[tuple[str, int]]:
        return self.source.assigned if self.source is not None else set()

    def _update_ready(self) -> None:
        if not self.outputs_ready and self.source is not None and self.source.assigned:  # the input appeared
            conf = self.settings.kafka.client_config()
            self._ensure_output_topics(conf, AdminClient(admin_config(conf)).list_topics(timeout=30))
        self.metrics.ready.set(1 if self.ready()[0] else 0)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.checkpoint is not None:
            self.checkpoint.on_revoke(consumer, partitions)
        if self.conns is not None:
            self.conns.forget(partitions)

    def _ensure_output_topics(self, admin_conf: dict[str, object], md: ClusterMetadata) -> None:
        """Alert, dead-letter (and shadow) topics with the input's partition count, once the input exists: created
        earlier, they would keep one partition after the input appears with more."""
        brokers = max(1, len(md.brokers))
        src = md.topics.get(self.settings.input_topic)
        if src is None or src.error is not None:
            log.warning("input topic %s does not exist yet; waiting for it (the output topics follow its partition "
                        "count)", self.settings.input_topic)
            return
        partitions = len(src.partitions)
        shadow = (self.settings.shadow_topic,) if self.settings.shadow_topic else ()
        for topic in (self.settings.alert_topic, self.settings.dead_letter_topic, *shadow):
            ensure_topic(admin_conf, topic, partitions, min(3, brokers), metadata=md)
        if self.conns is not None:  # snapshots of input partition p live on its partition p
            ensure_topic(admin_conf, self.conns.store.topic, partitions, min(3, brokers), metadata=md,
                         config=TOPIC_CONFIG, needs="READ WRITE")
        self.outputs_ready = True

    def run(self) -> None:
        if self.source is None:
            self.start()
        try:
            while not self.stop_event.is_set():
                self.step()
        finally:
            self.close()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop_event.set()
        if self.source is not None:
            try:
                if self.checkpoint is not None:
                    self.checkpoint.close()
                self.source.close()
            except Exception as exc:  # noqa: BLE001 - KafkaException or RuntimeError on a broken connection
                log.warning("consumer close: %s", exc)
            self.source = None
        if self.producer is not None:
            self.producer.flush(10)
            self.producer = None
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -------------------------------------------------------------------------------------- loop
    def step(self) -> int:
        """One micro-batch; returns the number of input records handled."""
        if self.source is None or self.producer is None or self.checkpoint is None:
            raise RuntimeError("Detector.start() was not called")
        t0 = time.perf_counter()
        polled = self.source.poll(self.settings.batch_size, self.settings.batch_timeout_ms / 1000)
        self.producer.poll(0)
        if polled is None:
            self.auth.check()
        else:
            self.auth.progress()
        records, unreadable, skipped = polled or ([], [], [])
        self._swap_model()
        if not records and not skipped:
            self.checkpoint.idle()  # input is idle: finish the previous batch so its offsets commit now
            flushed = self.conns.flush_idle() if self.conns is not None else None
            if flushed is not None:  # Zeek input idle: what the featurizer held is released now
                self._process(InputBatch.of([], []), t0, time.perf_counter(), flushed)
            return 0
        self.in_batch = True
        try:
            if records:
                self._process(InputBatch.of(records, unreadable), t0, time.perf_counter())
            if skipped:  # after the records: their offsets are below the skipped range's end
                self._skip(skipped)
        finally:
            self.in_batch = False
        return len(records)

    def _skip(self, skipped: list[Skipped]) -> None:
        """Undecodable batches (``core.poison``): a dead letter naming each range, committed past it, counted."""
        assert self.checkpoint is not None
        offsets = [TopicPartition(s.topic, s.partition, s.end) for s in skipped]
        if self.conns is not None:  # Zeek input: ranges handled before a restart are not repeated
            skipped, offsets = self.conns.skip(skipped)
        outputs = skipped_dead_letters(skipped, self.settings.dead_letter_topic)

        def done() -> None:
            for s in skipped:
                self.metrics.skipped.labels(topic=s.topic).inc(s.end - s.start)
                self.metrics.dead_lettered.labels(reason=poison.REASON).inc()

        self.checkpoint.commit(outputs, offsets, done)

    def _drift_monitor(self, live: LiveModel) -> DriftMonitor | None:
        profile = live.bundle.profile()
        if profile is None:
            log.warning("bundle %s has no training profile (made before profiles): no drift statistics",
                        live.version)
            return None
        return DriftMonitor(profile, self.schema, self.metrics, self.settings.drift_window,
                            self.settings.drift_sample_every)

    def _swap_model(self) -> None:
        """Between two batches: put a verified new model in force (the previous batch was scored by the old)."""
        new = self.watcher.take() if self.watcher is not None else None
        if new is None:
            return
        old, self.live = self.live, new
        self.metrics.describe_model(new.bundle.manifest, new.threshold)
        self.metrics.model_swaps.inc()
        self.drift = self._drift_monitor(new)  # drift is measured against the model in force
        self.thresholds.follow(new)
        log.info("model %s (threshold %.6g) in force, replacing %s; no restart", new.version, new.threshold,
                 old.version)

    def _process(self, batch: InputBatch, t0: float, t_poll: float, conns: ConnBatch | None = None) -> None:
        assert self.checkpoint is not None
        live = self.live
        if self.conns is not None and conns is None:
            conns = self.conns.process(batch.records, batch.unreadable)
        if conns is not None:  # Zeek input: the rows are what the featurizer released, of this batch or before
            records, parsed, offsets, extra = conns.records, conns.parsed, conns.offsets, conns.state
        else:
            records, offsets, extra = batch.records, batch.offsets, []
            parsed = self.parser.parse_safe(batch.values, batch.unreadable)
        t_parse = time.perf_counter()
        scored = live.scoring.score(parsed)
        t_score = time.perf_counter()
        flagged = flagged_rows(scored.scores, self.thresholds.current(live))
        mask = np.zeros(len(scored.scores), dtype=bool)
        mask[flagged] = True
        tally = self.labels.tally(records, parsed.index, mask)
        if self.drift is not None:
            self.drift.observe(parsed.numeric, scored.category_ids)
        outputs = live.alerts.build(records, parsed, scored, flagged)
        self.thresholds.observe(live, scored.scores)
        outputs += dead_letters(batch.records, parsed.rejections, self.settings.dead_letter_topic)
        shadow = self.shadow.score(records, parsed, scored, live.threshold) if self.shadow else None
        if shadow is not None:
            outputs += shadow.outputs
        t_alerts = time.perf_counter()

        def done() -> None:
            account(self.metrics, self.schema, self.shadow, batch, parsed, scored, shadow, tally)
            if conns is not None:
                conns.on_done()
                self.metrics.replayed.inc(conns.replayed)

        produce_s, commit_s = self.checkpoint.commit(outputs + extra, offsets, done)
        for stage, seconds in (("poll", t_poll - t0), ("parse", t_parse - t_poll), ("score", t_score - t_parse),
                               ("alerts", t_alerts - t_score), ("produce", produce_s), ("commit", commit_s)):
            self.metrics.stage.labels(stage=stage).observe(seconds)


def _on_commit(err: object, _partitions: list[TopicPartition]) -> None:
    if err is not None:
        log.warning("asynchronous offset commit failed (records may be re-delivered): %s", err)
