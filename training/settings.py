"""Settings of ``python -m training`` (train, evaluate, benchmark), each declared once (see ``core.settings``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.acl import Grant, topic
from core.kafka import KafkaSettings
from core.records import DATA_ENV, default_data_path
from core.settings import MODEL_DIR, Settings

Preset = Literal["default", "lab", "unsw_nb15"]  # training.autoencoder.PRESETS; a test keeps the two in step


class TrainSettings(Settings):
    """Train an autoencoder on a file's normal rows and write a model bundle."""

    model_config = SettingsConfigDict(env_prefix="TRAIN_")

    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV,
                       description="data file (gz or plain)")
    schema_name: str = Field("kdd99", validation_alias="TRAIN_SCHEMA", json_schema_extra={"flag": "--schema"},
                             description="record schema: a shipped name (kdd99, nsl_kdd) or a schema file")
    out: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR, description="bundle directory")
    store: Path | None = Field(None, description="write the bundle into this model store under its version "
                                                 "instead of --out (not promoted: shadow it, then promote)")
    preset: Preset | None = Field(None, description="model preset (default: the schema's own, else 'default')")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    from_topic: str | None = Field(None, description="train on recent records of this Kafka topic instead of --data")
    records: int | None = Field(None, ge=100, description="with --from-topic: the last N records (all partitions)")
    since: dt.datetime | None = Field(None, description="with --from-topic: records since this time (ISO 8601)")
    alert_topic: str | None = Field("kdd-alerts", description="with --from-topic: leave out records the live model "
                                                               "alerted on (read from this topic; empty = keep them)")
    exclude_attack_labels: bool = Field(False, description="with --from-topic: also leave out records whose label "
                                                           "header names an attack")
    run_dir: Path | None = Field(None, description="where TensorBoard logs go (default: OUT/../runs/<bundle name>)")
    target_fpr: float = Field(0.01, gt=0, lt=1,
                              description="false-positive rate on held-out normal rows that sets the threshold")
    epochs: int | None = Field(None, ge=1, description="override the preset's epochs")
    batch_size: int | None = Field(None, ge=1, description="override the preset's batch size")
    learning_rate: float | None = Field(None, gt=0, description="override the preset's Adam rate")
    latent: int | None = Field(None, ge=1, description="override the latent size")
    widths: tuple[int, ...] | None = Field(None, description="encoder widths, e.g. 64,32,16")
    dropout: float | None = Field(None, ge=0, lt=1, description="override the dropout rate")
    seed: int = Field(42, description="seed for the split and the weights")
    limit: int | None = Field(None, ge=1, description="read only the first N lines (quick runs)")
    dedup: bool = Field(True, description="de-duplicate fit rows")

    def acls(self) -> list[Grant]:
        """What retraining from the stream does on the cluster (``core.acl``): read the window of its topic and
        the alerts on it, by partition and offset, with no consumer group of its own."""
        if not self.from_topic:
            return []
        return [topic(self.from_topic, "READ", "the window it trains on"),
                *([topic(self.alert_topic, "READ", "which records were alerted on (left out)")]
                  if self.alert_topic else [])]

    @field_validator("widths", mode="before")
    @classmethod
    def _widths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(w) for w in value.split(",") if w.strip())
        return value


class StoreSettings(Settings):
    """Point a model store's 'current' at a version (promote), back at the previous one (rollback), or list it."""

    model_config = SettingsConfigDict(env_prefix="STORE_")

    store: Path = Field(Path("artifacts/models"), description="model store directory")
    version: str | None = Field(None, description="the version to promote (a directory name in the store, or its "
                                                  "path); omit to list")


class EvaluateSettings(Settings):
    """Score a labelled file with a bundle; write report.json and plots."""

    model_config = SettingsConfigDict(env_prefix="EVAL_")

    model: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR, description="bundle directory")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV,
                       description="labelled data file (the bundle's schema)")
    out: Path = Field(Path("artifacts/eval"), description="report directory")
    target_fpr: float | None = Field(None, ge=1e-4, le=0.5, description="evaluate at the threshold placed at this "
                                     "false-positive rate of the bundle's calibration rows (default: its own)")
    plots: bool = Field(True, description="write the PNG plots")
    baseline: bool = Field(True, description="fit the IsolationForest baseline")
    scores_out: Path | None = Field(None, description="also write every row's record_id, label, score and flag here")


class CompareSettings(Settings):
    """The lab's comparison: the autoencoder at latent 2, 4, 8, 16 and other unsupervised detectors on the same
    split; a Markdown table and a JSON file."""

    model_config = SettingsConfigDict(env_prefix="COMPARE_")

    schema_name: str = Field("kdd99", validation_alias="COMPARE_SCHEMA", json_schema_extra={"flag": "--schema"},
                             description="record schema: a shipped name (kdd99, nsl_kdd, unsw_nb15) or a schema file")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV, description="labelled data file")
    out: Path | None = Field(None, description="where compare.json and compare.md go (default: artifacts/compare/"
                                               "<schema>)")
    seed: int = Field(42, description="seed for the split, the attack halves, the models and the bootstrap")
    resamples: int = Field(200, ge=10, le=10_000, description="bootstrap resamples per interval")
    limit: int | None = Field(None, ge=1, description="read only the first N lines (quick runs)")
    epochs: int | None = Field(None, ge=1, description="override the autoencoders' epochs (quick runs)")
    preset: Preset | None = Field(None, description="also judge this autoencoder preset (default: the schema's own, "
                                                    "when it has one)")


class BenchmarkSettings(Settings):
    """The KDDRev protocol over several seeds (F1 against DAGMM and GOAD)."""

    model_config = SettingsConfigDict(env_prefix="BENCH_")

    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV, description="KDD99 file")
    seeds: int = Field(5, ge=1, le=100, description="number of seeds")
    preset: Preset = Field("default", description="model preset")
    baseline: bool = Field(True, description="also run the IsolationForest baseline")
