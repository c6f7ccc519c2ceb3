"""Metrics of predicted probabilities and the HTML report (ROC, calibration, learning curves)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from deepfm_model.layout import METRICS_FILE, REPORT_DIR, REPORT_INDEX
from deepfm_model.spec.files import write_json, write_text

EPSILON = 1e-7


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half); NaN when one class is absent."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # Average ranks over ties.
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [1e-7, 1 - 1e-7]."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), EPSILON, 1 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    y = np.asarray(labels).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_threshold = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_threshold]
    fp = np.cumsum(~y)[last_of_threshold]
    tpr = np.r_[0.0, tp / max(y.sum(), 1)]
    fpr = np.r_[0.0, fp / max((~y).sum(), 1)]
    return fpr, tpr


def calibration_bins(labels: np.ndarray, probabilities: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Mean predicted vs observed positive rate in equal-width probability bins (empty bins left out)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    predicted, observed, counts = [], [], []
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            predicted.append(float(p[inside].mean()))
            observed.append(float(y[inside].mean()))
            counts.append(int(inside.sum()))
    return {"predicted": predicted, "observed": observed, "count": counts}


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """AUC, logloss, mean predicted and observed positive rate, and the row count of one split."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    return {
        "auc": roc_auc(y, p),
        "logloss": log_loss(y, p),
        "mean_prediction": float(p.mean()) if p.size else float("nan"),
        "positive_rate": float(y.mean()) if y.size else float("nan"),
        "rows": int(y.size),
    }


RANKING_CUTOFF = 10  # NDCG@k and recall@k over each user's candidates


def ranking_metrics(
    users: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = RANKING_CUTOFF
) -> dict[str, float]:
    """Per-user ranking quality, averaged over users: NDCG@k and recall@k of the positive rows.

    Each user's candidates are their rows (e.g. the movies they rated in the test window), ranked by `scores`
    (ties in row order); a positive row is relevant. Users without a positive row are left out, since neither
    metric is defined for them.

    Returns:
        `ndcg_at_<k>`, `recall_at_<k>` and `ranking_users` (the users averaged over).
    """
    if k < 1:
        raise ValueError(f"`k` must be positive. Received: `k={k}`")
    users = np.asarray(users)
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not len(users) == len(y) == len(s):
        raise ValueError(
            f"`users`, `labels` and `scores` must have one row each. Received: {len(users)}, {len(y)}, {len(s)}"
        )
    # Rows grouped by user, best score first within a user (a stable sort keeps ties in row order).
    order = np.lexsort((-s, users))
    users, y = users[order], y[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, sizes)  # 0-based rank within the user
    discount = 1.0 / np.log2(rank + 2.0)
    in_top = rank < k
    dcg = np.add.reduceat(y * discount * in_top, starts)
    hits = np.add.reduceat(y * in_top, starts)
    positives = np.add.reduceat(y, starts)
    ideal_ranks = np.minimum(positives, k).astype(int)
    cumulative = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = np.where(ideal_ranks > 0, cumulative[np.maximum(ideal_ranks - 1, 0)], 0.0)
    rated = positives > 0
    return {
        f"ndcg_at_{k}": float(np.mean(dcg[rated] / idcg[rated])) if rated.any() else float("nan"),
        f"recall_at_{k}": float(np.mean(hits[rated] / positives[rated])) if rated.any() else float("nan"),
        "ranking_users": int(rated.sum()),
    }


def popularity_scores(train_items: np.ndarray, train_labels: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The popularity baseline: each item's count of positive rows in the training data (0 when unseen)."""
    positives = pd.Series(np.asarray(train_labels, dtype=np.float64)).groupby(np.asarray(train_items)).sum()
    return pd.Series(np.asarray(items)).map(positives).fillna(0.0).to_numpy(dtype=np.float64)


def flatten_metrics(per_split: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """`{"test": {"auc": ..}}` -> `{"test_auc": ..}`, the layout of `metrics.json`."""
    return {f"{split}_{name}": value for split, values in per_split.items() for name, value in values.items()}


def write_report(
    out_dir: str | Path,
    labels: Mapping[str, np.ndarray],
    probabilities: Mapping[str, np.ndarray],
    history: Mapping[str, list[float]] | None = None,
    metrics: Mapping[str, float] | None = None,
    title: str = "DeepFM evaluation",
) -> Path:
    """Write `<out_dir>/report/index.html` with ROC, calibration and learning-curve PNGs.

    Args:
        out_dir: run or evaluation directory.
        labels: split name -> 0/1 labels.
        probabilities: split name -> predicted probabilities (same splits as `labels`).
        history: Keras `History.history` (loss/auc per epoch), optional.
        metrics: flat metrics shown as a table, optional.
        title: page title.

    Returns:
        Path of `index.html`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = Path(out_dir) / REPORT_DIR
    report.mkdir(parents=True, exist_ok=True)
    images = []

    fig, ax = plt.subplots(figsize=(5, 5))
    for split, y in labels.items():
        fpr, tpr = roc_curve(y, probabilities[split])
        ax.plot(fpr, tpr, label=f"{split} (AUC {roc_auc(y, probabilities[split]):.4f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="False positive rate", ylabel="True positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(report / "roc.png", dpi=100)
    plt.close(fig)
    images.append(("ROC curve", "roc.png"))

    fig, ax = plt.subplots(figsize=(5, 5))
    for split, y in labels.items():
        bins = calibration_bins(y, probabilities[split])
        ax.plot(bins["predicted"], bins["observed"], marker="o", label=split)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="Mean predicted probability", ylabel="Observed positive rate", title="Calibration")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(report / "calibration.png", dpi=100)
    plt.close(fig)
    images.append(("Calibration", "calibration.png"))

    if history:
        curves = [name for name in ("loss", "auc") if name in history]
        fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
        for ax, name in zip(axes[0], curves, strict=True):
            epochs = np.arange(1, len(history[name]) + 1)
            ax.plot(epochs, history[name], marker="o", label="train")
            if f"val_{name}" in history:
                ax.plot(epochs, history[f"val_{name}"], marker="o", label="valid")
            ax.set(xlabel="Epoch", ylabel=name, title=name)
            ax.legend()
        fig.tight_layout()
        fig.savefig(report / "learning_curves.png", dpi=100)
        plt.close(fig)
        images.append(("Learning curves", "learning_curves.png"))

    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>" if isinstance(v, float)
        else f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in (metrics or {}).items()
    )  # fmt: skip
    figures = "".join(f'<h2>{html.escape(t)}</h2><img src="{f}" alt="{html.escape(t)}">' for t, f in images)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:2px 12px}img{max-width:100%}</style></head>"
        f"<body><h1>{html.escape(title)}</h1><table>{rows}</table>{figures}</body></html>"
    )
    index = write_text(report / REPORT_INDEX, page)
    write_json(report / METRICS_FILE, dict(metrics or {}))
    return index


def evaluate_model(model_dir: str | Path, data_path: str | Path, out_dir: str | Path, split: str = "test") -> dict:
    """Score a labelled parquet file with a trained run's model; write `metrics.json` and the report.

    The metrics are `run_training`'s `<split>_*`: "liked" among the rated rows, by the like signal.

    Args:
        model_dir: folder holding `model.keras` and `preprocessing.json` (a run directory).
        data_path: parquet with every feature and `label`.
        out_dir: where `metrics.json` and `report/` go (created).
        split: name of the split in the metric keys (`<split>_auc`, ...).

    Returns:
        The flat metrics.
    """
    from deepfm_model.objectives import like_signal, training_target
    from deepfm_model.predict import load_trained, predict_outputs
    from deepfm_model.preprocessing import load_split

    frame = load_split(data_path)
    labels, probabilities, _ = like_signal(training_target(frame), predict_outputs(load_trained(model_dir), frame))
    metrics = flatten_metrics({split: compute_metrics(labels, probabilities)})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / METRICS_FILE, metrics)
    write_report(out_dir, {split: labels}, {split: probabilities}, metrics=metrics, title=f"DeepFM on {split}")
    return metrics
