"""Detector throughput and latency on this machine; prints one JSON line.

``python -m scripts.bench_detector [--model DIR] [--records N] [--rate R] [--latency-seconds S]``

1. Pre-fills a topic with N (default 1,000,000) replayed records: the 10% file looped, attacks
   subsampled to 1% of the stream as the lab did (a realistic share; with the raw file's 80% attacks
   nearly every record would be an alert). With label headers, as a labelled replay carries them (the
   detector then counts decisions by label family, which reads every record's headers); ``--no-labels``
   without, as production traffic arrives.
2. ``raw_consume_rps``: a consumer with the detector's client settings drains it and discards, in a fresh
   interpreter of its own: in this process, after a detector has loaded TensorFlow, the raw consumer's
   garbage collections would walk the model's ~480,000 objects and flatter the ratio (up to 1.9x slower
   raw drains were measured that way). One raw drain first warms the broker (JIT, page cache); not counted.
3. ``detector_rps``: the detector (the service's own code, in this process) drains it: parse, score,
   publish alerts, commit. ``ratio`` = detector / raw. Steps 2 and 3 alternate ``--runs`` times (default 3),
   each in a fresh consumer group, because one pair is too noisy on a small machine to steer by: the JSON
   has every run's ``ratios``, their ``ratio_median`` (``ratio``, ``detector_rps`` and ``raw_consume_rps``
   are the median run's) and ``stage_us_per_record``: the detector's own stage timings (its
   ``detector_stage_duration_seconds`` histogram) per record, the median over runs.
   With ``--processes N`` (default: this machine's cores) each run also drains with N detector processes in one
   group, as ``python -m detector --processes N`` runs them: ``detector_rps_processes``, ``ratio_processes``
   (against the same run's bare consumer) and their stage timings (CPU over all processes).
4. ``parse_alone_us_per_record``: the parse stage by itself on the file's first 200,000 lines (no Kafka, no
   other threads on the cores), next to the drain's ``stage_us_per_record.parse``.
5. Latency: the producer CLI offers R (default 10,000) records/s for S seconds while a detector process
   (with ``--processes N``) runs (``--shuffle``: the producer reads the file once, up front, so no parsing
   competes with pacing);
   the alert topic uses broker append time, so each alert's latency is its append time minus the input
   record's timestamp: produce-to-alert, measured outside the detector.

Without KAFKA_BOOTSTRAP_SERVERS a local broker is started and stopped. Without a bundle at --model one
is trained with the default preset first.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer

import testkit as harness
from core.kafka import KafkaSettings
from core.records import default_data_path
from core.settings import MODEL_DIR
from detector.settings import DetectorSettings
from detector.workers import cores
from producer.replay import Replayer
from producer.source import SourceOptions

log = logging.getLogger("bench_detector")


def prefill(bootstrap: str, topic: str, data: Path, n: int, labels: bool = True) -> None:
    source = SourceOptions(data=data, loop=True, limit=n, anomaly_fraction=0.01)
    res = Replayer({"bootstrap.servers": bootstrap}, topic, source, rate=0.0, progress=False,
                   label_header=labels).run()
    if res.delivered != n:
        raise RuntimeError(f"pre-fill delivered {res.delivered} of {n}")


def raw_consume(settings: DetectorSettings, n: int) -> float:
    from detector.clients import client_configs

    consumer_conf, _ = client_configs(settings)  # the detector's exact consumer settings
    consumer = Consumer({**consumer_conf, "group.id": harness.unique("raw")})
    consumer.subscribe([settings.input_topic])
    got = 0
    t0 = None
    while got < n:
        msgs = consumer.consume(num_messages=settings.batch_size, timeout=settings.batch_timeout_ms / 1000)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                m.value()
                got += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    consumer.close()
    return got / elapsed


def parse_only(data: Path, n: int = 200_000, batch: int = 2_000) -> float:
    """Microseconds per record of the parse stage alone (no Kafka, no other thread): the file's first ``n`` lines
    as the producer sends them (label cut off), in batches of ``batch``, best of three passes. The drain's parse
    figure is higher by what the other threads on the same cores take from it."""
    from core.records import open_text_lines
    from core.schema import kdd99
    from core.wire import Parser

    lines: list[bytes] = []
    for raw in open_text_lines(data):
        lines.append(raw.rsplit(b",", 1)[0])
        if len(lines) == n:
            break
    batches = [lines[i : i + batch] for i in range(0, len(lines), batch)]
    parser = Parser(kdd99())
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for values in batches:
            parser.parse_safe(values)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / len(lines)


def raw_consume_isolated(settings: DetectorSettings, n: int) -> float:
    """:func:`raw_consume` in a fresh interpreter (spawned, so nothing of this process' heap comes along)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(raw_consume, (settings, n)))


def _stage_sums(det: Any) -> tuple[dict[str, float], float]:
    """Seconds spent in each stage, and the number of batches, from a detector's own histograms."""
    from detector.metrics import STAGES

    registry = det.metrics.registry
    sums = {stage: registry.get_sample_value("detector_stage_duration_seconds_sum", {"stage": stage}) or 0.0
            for stage in STAGES}
    return sums, registry.get_sample_value("detector_batch_size_records_count") or 1.0


def _drain_worker(settings: DetectorSettings, n: int, done: Any, start: Any, out: Any) -> None:
    """One of ``--processes`` detectors in one group (a spawned process): joins when all are loaded, drains until
    the group has handled ``n``; reports (records, first record's time, end, stage sums, batches)."""
    from detector.service import Detector

    os.environ.update(harness.QUIET_TF)
    det = Detector(settings)
    start.wait()  # every worker has its model loaded: they join the group together
    det.start()
    handled, t0 = 0, None
    try:
        while done.value < n:
            k = det.step()
            if k:
                t0 = t0 or time.perf_counter()
                handled += k
                with done.get_lock():
                    done.value += k
        t1 = time.perf_counter()
    finally:
        det.close()
    out.put((handled, t0, t1, *_stage_sums(det)))


def drain_processes(settings: DetectorSettings, n: int, processes: int) -> tuple[float, dict[str, float], float]:
    """Records/s of ``processes`` detectors sharing the topic through the group (as ``--processes`` runs them),
    from the first record any of them handled to the last; stage us/record over all of them; mean batch."""
    # The group settles in one heartbeat after the last member joins (librdkafka's default: 3 s, a whole drain
    # here): a shorter one measures the processes sharing the work, not one of them alone until it notices.
    kafka = settings.kafka.model_copy(update={"extra": {**settings.kafka.extra, "heartbeat.interval.ms": "100"}})
    settings = settings.model_copy(update={"kafka": kafka})
    ctx = multiprocessing.get_context("spawn")
    done, start, out = ctx.Value("q", 0), ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_drain_worker, args=(settings, n, done, start, out)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    handled = sum(r[0] for r in results)
    log.info("records per detector process: %s", [r[0] for r in results])
    elapsed = max(r[2] for r in results) - min(r[1] for r in results if r[1] is not None)
    stages = {stage: 1e6 * sum(r[3][stage] for r in results) / max(handled, 1) for stage in results[0][3]}
    return handled / elapsed, stages, handled / sum(r[4] for r in results)


def detector_drain(settings: DetectorSettings, n: int) -> tuple[float, str, dict[str, float], float]:
    """Records/s, the scoring device, microseconds per record in each stage (and ``empty_polls``: polls that
    returned nothing mid-drain) and the mean batch size."""
    from detector.service import Detector

    det = Detector(settings)
    det.start()
    handled = 0
    t0 = None
    empty = 0  # polls that found nothing while records were waiting: the consumer starved (fetch settings)
    try:
        while handled < n:
            k = det.step()
            if k and t0 is None:
                t0 = time.perf_counter()
            empty += int(k == 0 and t0 is not None)
            handled += k
        elapsed = time.perf_counter() - (t0 or time.perf_counter())
    finally:
        det.close()
    sums, batches = _stage_sums(det)
    stages = {stage: 1e6 * seconds / max(handled, 1) for stage, seconds in sums.items()}
    stages["empty_polls"] = float(empty)
    return handled / elapsed, det.device, stages, handled / batches


def alternate(settings: DetectorSettings, n: int, runs: int, processes: int) -> dict[str, Any]:
    """Raw, one-detector and ``processes``-detector drains, alternating, each in a group of its own; the median
    run and every ratio, for one process and for ``processes``."""
    pairs, multi = [], []
    empty_polls: list[int] = []
    warm = raw_consume_isolated(settings.model_copy(update={"group_id": harness.unique("warm")}), n)
    log.info("warm-up raw drain (not counted): %.0f/s", warm)
    for i in range(runs):
        run = settings.model_copy(update={"group_id": harness.unique("bench")})
        raw = raw_consume_isolated(run, n)
        rps, device, stages, mean_batch = detector_drain(run, n)
        empty_polls.append(int(stages.pop("empty_polls")))
        log.info("run %d/%d: raw %.0f/s, detector %.0f/s, ratio %.3f; mean batch %.0f; us/record %s", i + 1, runs,
                 raw, rps, rps / raw, mean_batch, {k: round(v, 2) for k, v in stages.items()})
        pairs.append((rps / raw, rps, raw, stages, mean_batch))
        if processes > 1:
            many, many_stages, _ = drain_processes(settings.model_copy(update={"group_id": harness.unique("bench")}),
                                                   n, processes)
            log.info("run %d/%d: %d detector processes %.0f/s, ratio %.3f; us/record (CPU, all processes) %s", i + 1,
                     runs, processes, many, many / raw, {k: round(v, 2) for k, v in many_stages.items()})
            multi.append((many / raw, many, many_stages))
    ordered = sorted(pairs, key=lambda p: p[0])
    ratio, rps, raw, _, mean_batch = ordered[len(ordered) // 2]
    stage_us = {k: round(float(np.median([p[3][k] for p in pairs])), 3) for k in pairs[0][3]}
    out: dict[str, Any] = {
        "detector_rps": round(rps), "raw_consume_rps": round(raw), "ratio": round(ratio, 3),
        "ratios": [round(p[0], 3) for p in pairs], "ratio_median": round(ratio, 3),
        "stage_us_per_record": stage_us, "mean_batch_records": round(mean_batch), "empty_polls": empty_polls,
        "warmup_raw_rps": round(warm), "device": device}
    if multi:
        ratio_n, rps_n, _ = sorted(multi, key=lambda m: m[0])[len(multi) // 2]
        out.update({"processes": processes, "detector_rps_processes": round(rps_n),
                    "ratio_processes": round(ratio_n, 3), "ratios_processes": [round(m[0], 3) for m in multi],
                    "stage_us_per_record_processes": {k: round(float(np.median([m[2][k] for m in multi])), 3)
                                                      for k in multi[0][2]}})
    return out


def latency(bootstrap: str, model: Path, data: Path, rate: float, seconds: float, processes: int = 1
            ) -> dict[str, float]:
    topic, alerts = harness.unique("bench-lat-in"), harness.unique("bench-lat-alerts")
    harness.create_topics(bootstrap, (topic, 6), (alerts, 6, {"message.timestamp.type": "LogAppendTime"}))
    n = int(rate * seconds)
    with harness.DetectorProcess(bootstrap, topic, alerts, model, "--auto-offset-reset", "latest",
                                 processes=processes):
        prod = harness.start_replay(bootstrap, topic, data, n, rate, "--loop", "--shuffle", "--anomaly-fraction",
                                    "0.01", "-X", "linger.ms=5", stdout=-1)
        offered = harness.replay_summary(prod)["rate_per_s"]
        lat = harness.alert_latencies(bootstrap, alerts)
    return {"offered_rps": offered, "alerts": len(lat), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(np.max(lat))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap-servers", default=None, help="cluster (default: $KAFKA_BOOTSTRAP_SERVERS or local)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")))
    p.add_argument("--data", type=Path, default=default_data_path())
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=10_000)
    p.add_argument("--latency-seconds", type=float, default=30)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--no-labels", action="store_true",
                   help="pre-fill without label headers, as production traffic arrives (no live-evaluation tally)")
    p.add_argument("--runs", type=int, default=3, help="alternating raw/detector drain pairs (median reported)")
    p.add_argument("--processes", type=int, default=cores(),
                   help="also drain with this many detector processes in one group, as --processes runs them, and "
                        "measure latency through them (default: this machine's cores; 1: one process only)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    os.environ.update(harness.QUIET_TF)
    harness.ensure_bundle(args.model, args.data)
    with harness.broker(args.bootstrap_servers) as bootstrap:
        topic = harness.unique("bench-in")
        harness.create_topics(bootstrap, (topic, args.partitions))
        log.info("pre-filling %s with %d records", topic, args.records)
        t0 = time.monotonic()
        prefill(bootstrap, topic, args.data, args.records, labels=not args.no_labels)
        log.info("pre-filled in %.0fs", time.monotonic() - t0)
        settings = DetectorSettings(kafka=KafkaSettings(bootstrap_servers=bootstrap), input_topic=topic,
                                    alert_topic=harness.unique("bench-alerts"), model=args.model,
                                    group_id=harness.unique("bench"), metrics_port=0)
        drains = alternate(settings, args.records, args.runs, args.processes)
        parse_us = parse_only(args.data)
        log.info("parse alone: %.3f us/record", parse_us)
        lat = latency(bootstrap, args.model, args.data, args.rate, args.latency_seconds, args.processes)
        log.info("latency at %.0f/s offered through %d detector process(es): p50 %.1f ms, p99 %.1f ms",
                 lat["offered_rps"], args.processes, lat["p50_ms"], lat["p99_ms"])
    print(json.dumps({
        "benchmark": "detector", "records": args.records, "label_headers": not args.no_labels, **drains,
        "parse_alone_us_per_record": round(parse_us, 3),
        "p50_ms": round(lat["p50_ms"], 1),
        "p99_ms": round(lat["p99_ms"], 1), "latency_processes": args.processes,
        "latency_offered_rps": lat["offered_rps"], "latency_alerts": lat["alerts"],
        "batch_size": settings.batch_size, "batch_timeout_ms": settings.batch_timeout_ms,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
