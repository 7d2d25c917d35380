"""Settings of ``python -m training`` (train, evaluate, benchmark), each declared once (see ``core.settings``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from core.records import DATA_ENV, default_data_path
from core.settings import MODEL_DIR, Settings

Preset = Literal["default", "lab"]  # training.model.PRESETS; a test keeps the two in step


class TrainSettings(Settings):
    """Train an autoencoder on a file's normal rows and write a model bundle."""

    model_config = SettingsConfigDict(env_prefix="TRAIN_")

    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV,
                       description="data file (gz or plain)")
    schema_name: str = Field("kdd99", validation_alias="TRAIN_SCHEMA", json_schema_extra={"flag": "--schema"},
                             description="record schema: a shipped name (kdd99, nsl_kdd) or a schema file")
    out: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR, description="bundle directory")
    preset: Preset = Field("default", description="model preset")
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

    @field_validator("widths", mode="before")
    @classmethod
    def _widths(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(w) for w in value.split(",") if w.strip())
        return value


class EvaluateSettings(Settings):
    """Score a labelled file with a bundle; write report.json and plots."""

    model_config = SettingsConfigDict(env_prefix="EVAL_")

    model: Path = Field(Path("artifacts/model"), validation_alias=MODEL_DIR, description="bundle directory")
    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV,
                       description="labelled data file (the bundle's schema)")
    out: Path = Field(Path("artifacts/eval"), description="report directory")
    plots: bool = Field(True, description="write the PNG plots")
    baseline: bool = Field(True, description="fit the IsolationForest baseline")
    scores_out: Path | None = Field(None, description="also write every row's record_id, label, score and flag here")


class BenchmarkSettings(Settings):
    """The KDDRev protocol over several seeds (F1 against DAGMM and GOAD)."""

    model_config = SettingsConfigDict(env_prefix="BENCH_")

    data: Path = Field(default_factory=default_data_path, validation_alias=DATA_ENV, description="KDD99 file")
    seeds: int = Field(5, ge=1, le=100, description="number of seeds")
    preset: Preset = Field("default", description="model preset")
    baseline: bool = Field(True, description="also run the IsolationForest baseline")
