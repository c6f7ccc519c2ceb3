"""Ablation: what a feature view adds, trained side by side on one snapshot.

    python -m deepfm_model.ablation artifacts/latest/snapshot --view user_fresh

trains the model twice on the same train, valid and test files: once as they are, once with the view's features
blanked (numerics missing, strings empty), so they carry no information; the architecture, the seed and every
other input stay the same. It prints test AUC, logloss and the per-user ranking metrics of both, beside the
popularity baseline, and writes them to `<out>/ablation.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from deepfm_model.layout import SPLITS
from deepfm_model.spec.features import VIEWS, Kind, view_features

REPORTED = ("test_auc", "test_logloss", "test_ndcg_at_10", "test_recall_at_10", "best_epoch")
BASELINE = ("popularity_test_ndcg_at_10", "popularity_test_recall_at_10")


def blank_view(source: Path, target: Path, view: str) -> list[str]:
    """Copy the parquet file `source` to `target` with the features of `view` blanked; their names."""
    features = view_features(view)
    table = pq.read_table(source)
    for feature in features:
        column = table.schema.get_field_index(feature.name)
        if feature.kind is Kind.NUMERIC:
            values = pa.nulls(len(table), pa.float64())
        else:
            values = pa.array([""] * len(table), pa.string())
        table = table.set_column(column, feature.name, values)
    pq.write_table(table, target)
    return [f.name for f in features]


def run(snapshot: Path, view: str, out_dir: Path, epochs: int | None = None) -> dict:
    """Train with and without `view`'s features on `snapshot` (a folder of `<split>.parquet`); the metrics."""
    from deepfm_model.config import TrainConfig
    from deepfm_model.train import run_training

    train_config = TrainConfig() if epochs is None else TrainConfig(epochs=epochs)
    splits = [Path(snapshot) / f"{name}.parquet" for name in SPLITS]
    results = {}
    with tempfile.TemporaryDirectory(prefix="ablation-") as scratch:
        blanked = [Path(scratch) / path.name for path in splits]
        for path, target in zip(splits, blanked, strict=True):
            names = blank_view(path, target, view)
        for label, files in (("with", splits), ("without", blanked)):
            metrics = run_training(*files, Path(out_dir) / f"{label}_{view}", train_config=train_config)
            results[f"{label}_{view}"] = {k: metrics[k] for k in REPORTED}
        results["popularity"] = {k.removeprefix("popularity_"): metrics[k] for k in BASELINE}
    summary = {"snapshot": str(snapshot), "view": view, "blanked": names, "results": results}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def table(summary: dict) -> str:
    """The results as a Markdown table."""
    columns = ("test_auc", "test_logloss", "test_ndcg_at_10", "test_recall_at_10")
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in summary["results"].items():
        cells = [f"{metrics[c]:.4f}" if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("snapshot", type=Path, help="folder of train.parquet, valid.parquet, test.parquet")
    parser.add_argument("--view", default="user_fresh", choices=VIEWS, help="the feature view to blank")
    parser.add_argument("--out", type=Path, default=Path("artifacts/ablation"), help="output folder")
    parser.add_argument("--epochs", type=int, default=None, help="override TrainConfig.epochs")
    args = parser.parse_args(argv)
    summary = run(args.snapshot, args.view, args.out, args.epochs)
    print(table(summary))
    print(f"\n{args.out / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
