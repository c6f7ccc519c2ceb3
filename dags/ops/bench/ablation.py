"""`make ablation`: what each part of the model's training buys, on one run's snapshot and ranking candidates.

Each variant is trained on the run's snapshot (the same rows, the same seed) and scored on the run's
full-catalogue candidates (`RunDir.ranking_candidates`, written by `evaluate`) with the evaluator the nightly
run uses, beside the run's own rivals (from its `metrics.json`). Variants:

- `deepfm`: the nightly model (two heads, the like tower, sampled negatives, the recent movie ids);
- `no_like_tower`: the two-head model's own like head served, no like tower;
- `with_prior`: with the pick head's popularity prior (`ModelConfig.pick_prior`);
- `one_head`: one head trained on the same rows, "picked and liked" as its label (sampled rows count as 0);
- `rated_only`: one head on the rated events alone, the model before sampled negatives;
- `no_recent_movies`: without the recent movie ids (the item-to-item term inside the FM).

    python -m dags.ops.bench.ablation --ds 1998-04-23 [--variants deepfm,no_like_tower] [--out artifacts/bench/ablation.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd

from dags.ops.bench.report import machine, table, write_result
from dags.pipeline.config import PipelineConfig
from deepfm_model.spec.dates import check_ds
from deepfm_model.spec.features import PICKED, RECENT_MOVIES
from deepfm_model.spec.serving import PROBABILITY

logger = logging.getLogger(__name__)

VARIANTS = {  # name -> (ModelConfig overrides, rows: "all" or "rated", features blanked)
    "deepfm": ({}, "all", ()),
    "no_like_tower": ({"like_tower": False}, "all", ()),
    "with_prior": ({"pick_prior": True}, "all", ()),
    "one_head": ({"pick_head": False}, "all", ()),
    "rated_only": ({"pick_head": False}, "rated", ()),
    "no_recent_movies": ({}, "all", (RECENT_MOVIES,)),
}


def run_variant(config: PipelineConfig, ds: str, name: str) -> dict:
    """Train variant `name` on the run's snapshot; its full-catalogue NDCG@10 and Recall@10, and its test AUC."""
    from dags.pipeline.evaluation import ranking_summary
    from deepfm_model.config import ModelConfig, TrainConfig
    from deepfm_model.evaluate import roc_auc
    from deepfm_model.objectives import like_signal, training_target
    from deepfm_model.predict import predict_outputs
    from deepfm_model.train import train_model

    overrides, rows, blanked = VARIANTS[name]
    run = config.run_dir(ds)
    train, valid, test = (pd.read_parquet(run.split(split)) for split in ("train", "valid", "test"))
    candidates = pd.read_parquet(run.ranking_candidates)
    if rows == "rated":
        train, valid = train[train[PICKED] == 1], valid[valid[PICKED] == 1]
    for frame in (train, valid, test, candidates):
        for feature in blanked:
            frame[feature] = None
    train_config = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                               early_stopping_patience=config.early_stopping_patience, verbose=0)  # fmt: skip
    trained, history = train_model(train, valid, dataclasses.replace(ModelConfig(), **overrides), train_config)
    labels, scores, signal = like_signal(training_target(test), predict_outputs(trained, test))
    summary = ranking_summary(candidates, predict_outputs(trained, candidates)[PROBABILITY])
    return {**summary, "test_auc": roc_auc(labels, scores), "auc_signal": signal, "epochs": len(history["loss"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dags.ops.bench.ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, type=check_ds, help="the run whose snapshot and candidates are used")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None, help="default: <artifacts>/bench/ablation.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = PipelineConfig.from_env()
    names = [name for name in args.variants.split(",") if name]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    metrics = json.loads(config.run_dir(args.ds).metrics.read_text())
    rivals = {name: model for name, model in metrics["full_ranking"]["models"].items()
              if name not in ("deepfm", "recommend")}  # fmt: skip
    results = {"ds": args.ds, "machine": machine(), "variants": {}, "rivals": rivals}
    for name in names:
        logger.info("Training variant %s", name)
        results["variants"][name] = run_variant(config, args.ds, name)
    out = args.out or Path(config.artifacts) / "bench" / "ablation.json"
    write_result(out, results)
    print(format_table(results))


def format_table(results: dict) -> str:
    """The variants, then the run's rivals: NDCG@10 with its interval, Recall@10, test AUC (variants only)."""
    rows = []
    for name, row in {**results["variants"], **results["rivals"]}.items():
        low, high = row["ndcg_at_10_ci"]
        auc = f"{row['test_auc']:.4f}" if "test_auc" in row else ""
        rows.append([name, f"{row['ndcg_at_10']:.4f} [{low:.3f}, {high:.3f}]", f"{row['recall_at_10']:.4f}", auc])
    return table(["model", "NDCG@10", "Recall@10", "test AUC"], rows)


if __name__ == "__main__":
    main()
