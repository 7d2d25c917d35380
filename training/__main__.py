"""``python -m training {train,evaluate,compare,benchmark,promote,rollback,models}``: exit 0 on success, 2 on bad input,
1 on failure, 3 when Kafka is unreachable or denies access."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from core import settings as cli
from core.kafka import KafkaConnectError
from core.records import RecordFormatError
from core.schema import RecordSchema, SchemaError
from core.settings import SettingsError
from model import store
from training.settings import BenchmarkSettings, CompareSettings, EvaluateSettings, StoreSettings, TrainSettings

log = logging.getLogger("training")
COMMANDS: dict[str, type[cli.Settings]] = {"train": TrainSettings, "evaluate": EvaluateSettings,
                                           "compare": CompareSettings, "benchmark": BenchmarkSettings,
                                           "promote": StoreSettings,
                                           "rollback": StoreSettings, "models": StoreSettings}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, cls in COMMANDS.items():
        cli.add_arguments(sub.add_parser(name, help=(cls.__doc__ or "").strip()), cls)
    return parser


def _compare(s: CompareSettings) -> None:
    from pathlib import Path

    from training.compare import compare, write

    schema = RecordSchema.load(s.schema_name)
    presets = [p for p in {s.preset or schema.preset} if p != "default"]
    report = compare(s.data, schema, seed=s.seed, resamples=s.resamples, limit=s.limit, epochs=s.epochs,
                     presets=presets)
    json_path, md_path = write(report, s.out or Path("artifacts/compare") / schema.name)
    print(md_path.read_text())
    print(json.dumps({"json": str(json_path), "markdown": str(md_path),
                      "best_autoencoder_on_validation": report["best_autoencoder_on_validation"]}))


def _train(s: TrainSettings) -> None:
    from training.autoencoder import ModelConfig
    from training.train import TrainOptions, train

    schema = RecordSchema.load(s.schema_name)
    config = ModelConfig.from_preset(s.preset or schema.preset, epochs=s.epochs, batch_size=s.batch_size,
                                     learning_rate=s.learning_rate, latent=s.latent, widths=s.widths,
                                     dropout=s.dropout, seed=s.seed)
    out = s.store / f".new-{os.getpid()}" if s.store is not None else s.out
    run_dir = s.run_dir or out.parent / "runs" / out.name
    stream = None
    if s.from_topic:
        from training.from_topic import TopicWindow, read_training_rows

        stream = read_training_rows(s.kafka, TopicWindow(s.from_topic, s.records, s.since), schema,
                                    alert_topic=s.alert_topic or None, exclude_attack_labels=s.exclude_attack_labels,
                                    grants=s.acls())
    summary = train(TrainOptions(data=s.data, out=out, model=config, target_fpr=s.target_fpr, run_dir=run_dir,
                                 dedup=s.dedup, limit=s.limit, schema=schema), stream)
    if s.store is not None:
        summary["bundle"] = str(store.add(s.store, out))
        log.info("bundle added to the store as %s (not promoted)", summary["bundle"])
    print(json.dumps(summary))


def _store(command: str, s: StoreSettings) -> None:
    if command == "rollback":
        previous, now = store.rollback(s.store)
    elif command == "promote" and s.version:
        previous, now = store.promote(s.store, s.version)
    elif command == "promote":
        raise store.StoreError(f"promote needs {StoreSettings.describe('version')}")
    else:
        print(json.dumps({"store": str(s.store), "current": store.current_version(s.store),
                          "versions": store.versions(s.store)}))
        return
    log.info("%s: current now %s (was %s); detectors following the store swap within their poll period",
             s.store, now, previous)
    print(json.dumps({"store": str(s.store), "current": now, "previous": previous}))


def _evaluate(s: EvaluateSettings) -> None:
    from training.evaluate import evaluate

    report = evaluate(s.model, s.data, s.out, baseline=s.baseline, plots=s.plots, scores_out=s.scores_out,
                      target_fpr=s.target_fpr)
    keys = ("rows_scored", "roc_auc", "pr_auc", "recall_at_threshold", "fpr_at_threshold", "f1_at_threshold")
    print(json.dumps({k: report[k] for k in keys} | {"report": str(s.out / "report.json")}))


def _benchmark(s: BenchmarkSettings) -> None:
    from training import kddrev
    from training.autoencoder import ModelConfig

    result = kddrev.run(s.data, ModelConfig.from_preset(s.preset), seeds=s.seeds, baseline=s.baseline)
    print(kddrev.format_table(result))
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model.bundle import BundleError

    try:
        settings = cli.from_namespace(COMMANDS[args.command], args)
        if args.command in ("promote", "rollback", "models"):
            _store(args.command, settings)
        else:
            {"train": _train, "evaluate": _evaluate, "compare": _compare,
             "benchmark": _benchmark}[args.command](settings)
    except (SettingsError, RecordFormatError, SchemaError, BundleError, ValueError, OSError) as exc:
        log.error("%s", exc)
        return 2
    except KafkaConnectError as exc:
        log.error("%s", exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
