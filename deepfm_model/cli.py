"""Command line: `python -m deepfm_model {train,evaluate,export} ...`. Flags and logging are set up only here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from deepfm_model.config import MULTI_VALUE_COMBINERS, ModelConfig, TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deepfm_model", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train, evaluate, report and export one run")
    train.add_argument("--train", required=True, help="train split parquet")
    train.add_argument("--valid", required=True, help="validation split parquet")
    train.add_argument("--test", required=True, help="test split parquet")
    train.add_argument("--out", required=True, help="run output directory")
    defaults_model, defaults_train = ModelConfig(), TrainConfig()
    train.add_argument("--embedding-dim", type=int, default=defaults_model.embedding_dim)
    train.add_argument("--mlp-units", default=",".join(map(str, defaults_model.mlp_units)), help="e.g. 256,128")
    train.add_argument("--dropout", type=float, default=defaults_model.dropout)
    train.add_argument("--activation", default=defaults_model.activation, help="of the MLP's hidden layers")
    train.add_argument("--batch-norm", action="store_true", help="batch normalisation in the MLP")
    train.add_argument("--l2-embedding", type=float, default=defaults_model.l2_embedding, help="L2 on the table")
    train.add_argument(
        "--multi-value-combiner", choices=MULTI_VALUE_COMBINERS, default=defaults_model.multi_value_combiner,
        help="pooling of multi-valued fields (genres)",
    )  # fmt: skip
    train.add_argument("--batch-size", type=int, default=defaults_train.batch_size)
    train.add_argument("--epochs", type=int, default=defaults_train.epochs)
    train.add_argument("--learning-rate", type=float, default=defaults_train.learning_rate)
    train.add_argument("--seed", type=int, default=defaults_train.seed)
    train.add_argument("--verbose", type=int, default=defaults_train.verbose, help="0, 1 (bar) or 2 (per epoch)")
    train.add_argument("--stream", action="store_true", help="read the train parquet in record batches")
    train.add_argument("--mixed-precision", action="store_true", help="float16 (GPU) / bfloat16 (CPU) compute")
    train.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto", help="XLA train step")
    train.add_argument("--steps-per-execution", type=int, default=defaults_train.steps_per_execution)
    train.add_argument(
        "--blank", default="", help="ablation: comma-separated features set to one constant value in every split"
    )

    evaluate = commands.add_parser("evaluate", help="score a labelled parquet with a trained run")
    evaluate.add_argument("--model-dir", required=True, help="run directory with model.keras")
    evaluate.add_argument("--data", required=True, help="labelled parquet")
    evaluate.add_argument("--out", required=True, help="output directory for metrics.json and report/")
    evaluate.add_argument("--split", default="test", help="split name used in the metric keys")

    export = commands.add_parser("export", help="export a trained run as a SavedModel")
    export.add_argument("--model-dir", required=True, help="run directory with model.keras")
    export.add_argument("--export-dir", required=True, help="SavedModel output directory")
    export.add_argument("--warmup-data", help="parquet whose first rows become warm-up requests")
    export.add_argument("--warmup-rows", type=int, default=TrainConfig().warmup_rows)
    return parser


def _blank_features(paths: Sequence[str], names: list[str], out_dir: Path) -> tuple[Path, ...]:
    """Copies of the splits with each named feature set to one constant (0.0, or "" for strings): an ablation."""
    import pandas as pd

    from deepfm_model.spec.features import FEATURES_BY_NAME, Kind

    unknown = [name for name in names if name not in FEATURES_BY_NAME]
    if unknown:
        raise ValueError(f"`--blank` names unknown features {unknown}. Known: {sorted(FEATURES_BY_NAME)}")
    folder = out_dir / "blanked_inputs"
    folder.mkdir(parents=True, exist_ok=True)
    blanked = []
    for path in paths:
        frame = pd.read_parquet(path)
        for name in names:
            frame[name] = 0.0 if FEATURES_BY_NAME[name].kind is Kind.NUMERIC else ""
        blanked.append(folder / Path(path).name)
        frame.to_parquet(blanked[-1], index=False)
    return tuple(blanked)


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configurations the `train` flags ask for (the defaults elsewhere)."""
    model_config = dataclasses.replace(
        ModelConfig(),
        embedding_dim=args.embedding_dim,
        mlp_units=tuple(int(u) for u in args.mlp_units.split(",") if u),
        dropout=args.dropout,
        activation=args.activation,
        batch_norm=args.batch_norm,
        l2_embedding=args.l2_embedding,
        multi_value_combiner=args.multi_value_combiner,
    )
    train_config = dataclasses.replace(
        TrainConfig(), batch_size=args.batch_size, epochs=args.epochs, learning_rate=args.learning_rate,
        seed=args.seed, verbose=args.verbose, stream_from_parquet=args.stream, mixed_precision=args.mixed_precision,
        jit_compile={"auto": None, "on": True, "off": False}[args.jit_compile],
        steps_per_execution=args.steps_per_execution,
    )  # fmt: skip
    return model_config, train_config


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; print its result as JSON."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "train":
        from deepfm_model.train import run_training

        model_config, train_config = _configs(args)
        splits = (args.train, args.valid, args.test)
        if args.blank:
            splits = _blank_features(splits, [name for name in args.blank.split(",") if name], Path(args.out))
        result = run_training(
            *splits, args.out, model_config, train_config,
            tf_config=os.environ.get("TF_CONFIG"),
        )  # fmt: skip
    elif args.command == "evaluate":
        from deepfm_model.evaluate import evaluate_model

        result = evaluate_model(args.model_dir, args.data, args.out, args.split)
    else:
        import pandas as pd

        from deepfm_model.export import export_saved_model
        from deepfm_model.predict import load_trained

        warmup = pd.read_parquet(args.warmup_data).head(args.warmup_rows) if args.warmup_data else None
        path = export_saved_model(load_trained(args.model_dir), args.export_dir, warmup)
        result = {"export_dir": str(path)}
    print(json.dumps(result, indent=1))
    return 0
