"""PNG plots for the evaluation report: losses, score distributions, ROC, and the latent space."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")  # files only; no display on a server

import matplotlib.pyplot as plt  # noqa: E402 - after the backend choice
from sklearn.cluster import KMeans  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from training.autoencoder import encoder_of  # noqa: E402


def write_all(out: Path, bundle: Any, scores: np.ndarray, y: np.ndarray, families: np.ndarray, threshold: float,
              feats: pd.DataFrame, baseline_scores: np.ndarray | None, *, seed: int = 0) -> dict[str, str]:
    written = {
        "loss": _loss(out / "loss.png", bundle.path / "history.json"),
        "score_distribution": _scores(out / "score_distribution.png", scores, y, threshold),
        "roc": _roc(out / "roc.png", scores, y, baseline_scores),
        "latent_space": _latent(out / "latent_space.png", bundle, feats, families, seed),
    }
    return {k: str(v) for k, v in written.items() if v is not None}


def _loss(path: Path, history: Path) -> Path | None:
    if not history.exists():
        return None
    h = json.loads(history.read_text())
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(h["loss"], label="training")
    if "val_loss" in h:
        ax.plot(h["val_loss"], label="validation")
    ax.set(xlabel="epoch", ylabel="MSE", yscale="log", title="Reconstruction loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _scores(path: Path, scores: np.ndarray, y: np.ndarray, threshold: float) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    logs = np.log10(np.maximum(scores, 1e-9))
    bins = np.linspace(logs.min(), logs.max(), 80)
    ax.hist(logs[~y], bins=bins, alpha=0.6, density=True, label=f"normal ({int((~y).sum())})")
    if y.any():
        ax.hist(logs[y], bins=bins, alpha=0.6, density=True, label=f"attack ({int(y.sum())})")
    ax.axvline(np.log10(threshold), color="k", linestyle="--", label=f"threshold {threshold:.3g}")
    ax.set(xlabel="log10 anomaly score", ylabel="density", title="Score distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _roc(path: Path, scores: np.ndarray, y: np.ndarray, baseline: np.ndarray | None) -> Path | None:

    if y.all() or not y.any():
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in (("autoencoder", scores), ("isolation forest", baseline)):
        if s is None:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, s):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xscale="log", xlim=(1e-4, 1),
           title="ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _latent(path: Path, bundle: Any, feats: pd.DataFrame, families: np.ndarray, seed: int,
            per_family: int = 800) -> Path:
    """Latent codes of a stratified sample, projected to 2-D (PCA), by family and by k-means cluster."""

    rng = np.random.default_rng(seed)
    pick = np.concatenate([
        rng.choice(np.flatnonzero(families == f), size=min(per_family, int((families == f).sum())), replace=False)
        for f in np.unique(families)
    ])
    x = bundle.preprocessor.transform(feats.iloc[pick])
    z = np.asarray(encoder_of(bundle.model).predict(x, verbose=0, batch_size=4096))
    z2 = PCA(n_components=2, random_state=seed).fit_transform(z) if z.shape[1] > 2 else z
    k = min(5, len(np.unique(families)) + 1)
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(z)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for fam in np.unique(families[pick]):
        m = families[pick] == fam
        axes[0].scatter(z2[m, 0], z2[m, 1], s=4, alpha=0.6, label=fam)
    axes[0].set(title="Latent space by attack family (PCA of latent)")
    axes[0].legend(markerscale=4)
    axes[1].scatter(z2[:, 0], z2[:, 1], s=4, alpha=0.6, c=clusters, cmap="tab10")
    axes[1].set(title=f"k-means clusters (k={k}) in latent space")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
