"""``python -m training {train,evaluate,benchmark}``: exit 0 on success, 2 on bad input, 1 on failure."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from training import cli_env
from training.kdd99 import KddFormatError, default_data_path
from training.model import PRESETS, ModelConfig


def _widths(text: str) -> tuple[int, ...]:
    return tuple(int(w) for w in text.split(",") if w.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train an autoencoder on normal rows and write a model bundle")
    cli_env.add(tr, "--data", "KDD_DATA", default=default_data_path(), type=Path, help="KDD-format file (gz or plain)")
    cli_env.add(tr, "--out", "MODEL_DIR", default=Path("artifacts/model"), type=Path, help="bundle directory")
    cli_env.add(tr, "--preset", "TRAIN_PRESET", default="default", help=f"one of {', '.join(PRESETS)}",
                choices=list(PRESETS))
    cli_env.add(tr, "--run-dir", "TRAIN_RUN_DIR", default=None, type=Path,
                help="where TensorBoard logs go (default: OUT/../runs/<bundle name>)")
    cli_env.add(tr, "--target-fpr", "TRAIN_TARGET_FPR", default=0.01, type=float,
                help="false-positive rate on held-out normal rows that sets the threshold")
    cli_env.add(tr, "--epochs", "TRAIN_EPOCHS", type=int, help="override the preset's epochs")
    cli_env.add(tr, "--batch-size", "TRAIN_BATCH_SIZE", type=int, help="override the preset's batch size")
    cli_env.add(tr, "--learning-rate", "TRAIN_LEARNING_RATE", type=float, help="override the preset's Adam rate")
    cli_env.add(tr, "--latent", "TRAIN_LATENT", type=int, help="override the latent size")
    cli_env.add(tr, "--widths", "TRAIN_WIDTHS", type=_widths, help="encoder widths, e.g. 64,32,16")
    cli_env.add(tr, "--dropout", "TRAIN_DROPOUT", type=float, help="override the dropout rate")
    cli_env.add(tr, "--seed", "TRAIN_SEED", default=42, type=int, help="seed for the split and the weights")
    cli_env.add(tr, "--limit", "TRAIN_LIMIT", type=int, help="read only the first N lines (quick runs)")
    cli_env.add_flag(tr, "--dedup", "TRAIN_DEDUP", help="de-duplicate fit rows (on unless --no-dedup)")
    tr.set_defaults(dedup=os.environ.get("TRAIN_DEDUP", "1").lower() not in {"0", "false", "no", "off"})

    ev = sub.add_parser("evaluate", help="score a labelled file, write report.json and plots")
    cli_env.add(ev, "--model", "MODEL_DIR", default=Path("artifacts/model"), type=Path, help="bundle directory")
    cli_env.add(ev, "--data", "KDD_DATA", default=default_data_path(), type=Path, help="labelled KDD-format file")
    cli_env.add(ev, "--out", "EVAL_OUT", default=Path("artifacts/eval"), type=Path, help="report directory")
    cli_env.add_flag(ev, "--no-plots", "EVAL_NO_PLOTS", help="skip the PNG plots")
    cli_env.add_flag(ev, "--no-baseline", "EVAL_NO_BASELINE", help="skip the IsolationForest baseline")
    cli_env.add(ev, "--scores-out", "EVAL_SCORES_OUT", type=Path,
                help="also write every row's record_id, label, score and flag to this CSV")

    bm = sub.add_parser("benchmark", help="KDDRev protocol over several seeds (F1 vs DAGMM and GOAD)")
    cli_env.add(bm, "--data", "KDD_DATA", default=default_data_path(), type=Path, help="KDD99 file")
    cli_env.add(bm, "--seeds", "BENCH_SEEDS", default=5, type=int, help="number of seeds")
    cli_env.add(bm, "--preset", "TRAIN_PRESET", default="default", choices=list(PRESETS), help="model preset")
    cli_env.add_flag(bm, "--no-baseline", "BENCH_NO_BASELINE", help="skip the IsolationForest column")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "train":
            from training.train import TrainOptions, train

            config = ModelConfig.from_preset(
                args.preset, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                latent=args.latent, widths=args.widths, dropout=args.dropout, seed=args.seed,
            )
            run_dir = args.run_dir or args.out.parent / "runs" / args.out.name
            summary = train(TrainOptions(data=args.data, out=args.out, model=config, target_fpr=args.target_fpr,
                                         run_dir=run_dir, dedup=args.dedup, limit=args.limit))
            print(json.dumps(summary))
        elif args.command == "evaluate":
            from training.evaluate import evaluate

            report = evaluate(args.model, args.data, args.out, baseline=not args.no_baseline,
                              plots=not args.no_plots, scores_out=args.scores_out)
            keys = ("rows_scored", "roc_auc", "pr_auc", "recall_at_threshold", "fpr_at_threshold", "f1_at_threshold")
            print(json.dumps({k: report[k] for k in keys} | {"report": str(args.out / "report.json")}))
        else:
            from training import kddrev

            result = kddrev.run(args.data, ModelConfig.from_preset(args.preset), seeds=args.seeds,
                                baseline=not args.no_baseline)
            print(kddrev.format_table(result))
            print(json.dumps(result))
    except (KddFormatError, ValueError) as exc:
        logging.getLogger("training").error("%s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, don't dump a traceback on an operator
        from training.bundle import BundleError

        if isinstance(exc, BundleError):
            logging.getLogger("training").error("%s", exc)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
