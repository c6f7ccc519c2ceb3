"""The training task group after the snapshot: the Great Expectations gate, then the DeepFM training."""

from __future__ import annotations

import logging

from dags.pipeline.config import PipelineConfig
from dags.pipeline.features import ValidationFailed, report_dict
from deepfm_model.layout import SPLITS
from deepfm_model.spec.files import read_json, write_json

logger = logging.getLogger(__name__)

# What `train` returns (and what the Airflow UI shows in its XCom tab).
TRAINING_SUMMARY = ("test_auc", "test_logloss", "valid_auc")
# Train splits larger than this are streamed from parquet in record batches instead of held in memory.
STREAM_ROWS = 1_000_000


def validate(config: PipelineConfig, ds: str) -> dict:
    """Run the Great Expectations suite on the whole snapshot; raise `ValidationFailed` on any failure.

    Row count, label rate and feature distributions are compared with the previous accepted snapshot; an
    accepted snapshot records its own reference stats for the next run. A snapshot too large for memory is
    checked exactly in SQL and its distributions on a sample (`snapshot_validation`).
    """
    from feature_repo import snapshot_validation

    run = config.run_dir(ds)
    paths = [run.split(name) for name in SPLITS]
    earlier = run.earlier_references()
    reference = earlier[-1] if earlier else None
    report = snapshot_validation.validate_snapshot_files(paths, run.validation_dir, reference=reference)
    result = {**report_dict(report), "reference": str(reference) if reference else None}
    write_json(run.validation_result, result)
    logger.info("Great Expectations Data Docs: %s", report.docs_path)
    if not report.success:
        raise ValidationFailed(report.summary)
    snapshot_validation.record_reference_files(paths, run.reference)
    logger.info("Validation passed: %d expectations (reference: %s)", report.evaluated, reference)
    return result


def train(config: PipelineConfig, ds: str) -> dict:
    """Train the DeepFM on the validated snapshot; metrics, report, model and export go to the run's `model/`."""
    import pyarrow.parquet as pq

    from deepfm_model.config import ModelConfig, TrainConfig
    from deepfm_model.train import run_training

    run = config.run_dir(ds)
    if not (read_json(run.validation_result) or {}).get("success"):
        raise ValidationFailed(f"The snapshot of {ds} has not passed validation; refusing to train")
    done = read_json(run.model_metrics)
    if done is not None and (run.export_dir / "saved_model.pb").is_file():
        logger.info("Run %s already trained a model; reusing it (delete %s to retrain)", ds, run.model_dir)
        return {k: done[k] for k in TRAINING_SUMMARY}
    train_config = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        early_stopping_patience=config.early_stopping_patience,
        stream_from_parquet=pq.ParquetFile(run.split("train")).metadata.num_rows > STREAM_ROWS,
    )
    model_config = ModelConfig(pick_prior=config.pick_prior)
    metrics = run_training(
        *(run.split(name) for name in SPLITS), run.model_dir, model_config=model_config, train_config=train_config
    )
    update_metrics(config, ds, model_version=None)
    run.link_latest()
    logger.info("Model report: %s", run.report)
    return {k: metrics[k] for k in TRAINING_SUMMARY}


def update_metrics(config: PipelineConfig, ds: str, **fields) -> None:
    """Add `fields` to the model's metrics and copy them to the top of the run directory."""
    run = config.run_dir(ds)
    metrics = {**read_json(run.model_metrics), **fields}
    write_json(run.model_metrics, metrics)
    write_json(run.metrics, metrics)
