"""Train DeepFM from parquet splits and write a run's artefacts; `run_training` is the one entry point.

Output directory layout:
    model.keras            core Keras model (integer indices + normalised floats in, probability out)
    preprocessing.json     vocabularies and numeric statistics fitted on the train split
    config.json            the ModelConfig and TrainConfig used
    history.json           per-epoch Keras logs (loss, auc, logloss, val_*, learning_rate)
    metrics.json           {train,valid,test}_{auc,logloss,mean_prediction,positive_rate,rows} and run facts
    report/index.html      ROC, calibration and learning-curve plots (PNG) and the metrics
    export/                SavedModel with the raw-feature `serving_default` signature and warm-up requests
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from deepfm_model import features as spec
from deepfm_model.config import ModelConfig, TrainConfig
from deepfm_model.evaluate import compute_metrics, flatten_metrics, write_report
from deepfm_model.export import export_saved_model
from deepfm_model.model import build_model
from deepfm_model.predict import TrainedModel, predict_frame
from deepfm_model.preprocessing import (
    FeaturePreprocessor,
    check_frame,
    fit_preprocessing,
    make_dataset,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EXPORT_DIR = "export"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
CONFIG_FILE = "config.json"


def load_split(path: str | Path) -> pd.DataFrame:
    """Read one parquet split and check it has every feature and the label."""
    frame = pd.read_parquet(path)
    check_frame(frame)
    if spec.LABEL not in frame.columns:
        raise KeyError(f"Split {str(path)!r} lacks the `{spec.LABEL}` column. Received: {list(frame.columns)}")
    return frame


def distribution_scope(train_config: TrainConfig):
    """A MirroredStrategy scope over the local GPUs (TensorFlow backend), else a no-op context."""
    if train_config.distribute and keras.backend.backend() == "tensorflow":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            logger.info("Training on %d GPU(s) with MirroredStrategy", len(gpus))
            return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


def train_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
) -> tuple[TrainedModel, dict[str, list[float]]]:
    """Fit preprocessing on `train`, build and train DeepFM with early stopping on validation AUC.

    Returns:
        The trained model (best validation-AUC weights restored) and its per-epoch history.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    keras.utils.set_random_seed(train_config.seed)
    preprocessor = FeaturePreprocessor(fit_preprocessing(train, model_config))
    train_data = make_dataset(
        train, preprocessor, train_config.batch_size, shuffle_buffer=min(train_config.shuffle_buffer, len(train)),
        seed=train_config.seed,
    )  # fmt: skip
    valid_data = make_dataset(valid, preprocessor, train_config.predict_batch_size)
    with distribution_scope(train_config):
        model = build_model(
            model_config, preprocessor.categorical_sizes, preprocessor.multi_categorical_sizes, preprocessor.num_numeric
        )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=train_config.learning_rate),
            loss=keras.losses.BinaryCrossentropy(),
            metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryCrossentropy(name="logloss")],
        )
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=train_config.early_stopping_patience,
            restore_best_weights=True, verbose=1,
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_auc", mode="max", factor=train_config.reduce_lr_factor,
            patience=train_config.reduce_lr_patience, min_lr=train_config.min_learning_rate, verbose=1,
        ),
    ]  # fmt: skip
    fit = model.fit(
        train_data,
        validation_data=valid_data,
        epochs=train_config.epochs,
        callbacks=callbacks,
        verbose=train_config.verbose,
        shuffle=False,  # tf.data already shuffles, seeded
    )
    history = {k: [float(v) for v in values] for k, values in fit.history.items()}
    return TrainedModel(model, preprocessor), history


def run_training(
    train_path: str | Path,
    valid_path: str | Path,
    test_path: str | Path,
    out_dir: str | Path,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
) -> dict:
    """Train, evaluate, report and export one run; the pipeline and the CLI call this.

    Args:
        train_path: parquet of the train split (features, `event_timestamp`, `rating`, `label`).
        valid_path: parquet of the validation split (early stopping, learning-rate schedule).
        test_path: parquet of the test split (reported only).
        out_dir: run output directory (created); see the module docstring for its layout.
        model_config: architecture; `ModelConfig()` when `None`.
        train_config: optimisation; `TrainConfig()` when `None`.

    Returns:
        The metrics written to `metrics.json` (`test_auc`, `test_logloss`, `valid_auc`, `*_mean_prediction`,
        `*_positive_rate`, `*_rows`, ...).
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {name: load_split(path) for name, path in zip(SPLITS, (train_path, valid_path, test_path), strict=True)}
    logger.info("Rows: %s", {name: len(f) for name, f in frames.items()})

    started = time.monotonic()
    trained, history = train_model(frames["train"], frames["valid"], model_config, train_config)
    training_seconds = time.monotonic() - started

    labels = {name: f[spec.LABEL].to_numpy(dtype=np.float32) for name, f in frames.items()}
    probabilities = {
        name: predict_frame(trained, f, train_config.predict_batch_size) for name, f in frames.items()
    }
    per_split = {name: compute_metrics(labels[name], probabilities[name]) for name in SPLITS}
    val_auc = history.get("val_auc", [])
    metrics = {
        **flatten_metrics(per_split),
        "epochs_trained": len(history.get("loss", [])),
        "best_epoch": int(np.nanargmax(val_auc)) + 1 if val_auc else 0,
        "training_seconds": round(training_seconds, 2),
        "backend": keras.backend.backend(),
    }

    trained.save(out_dir)
    (out_dir / CONFIG_FILE).write_text(
        json.dumps({"model": model_config.to_dict(), "train": train_config.to_dict()}, indent=1)
    )
    (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1))
    (out_dir / METRICS_FILE).write_text(json.dumps(_json_safe(metrics), indent=1))
    write_report(out_dir, labels, probabilities, history, metrics, title=f"DeepFM run {out_dir.name}")
    if keras.backend.backend() == "tensorflow":
        export_saved_model(trained, out_dir / EXPORT_DIR, frames["test"].head(train_config.warmup_rows))
    else:
        logger.warning("Backend %s: SavedModel export skipped (needs TensorFlow)", keras.backend.backend())
    logger.info("test_auc=%.4f test_logloss=%.4f", metrics["test_auc"], metrics["test_logloss"])
    return metrics


def _json_safe(values: dict) -> dict:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}
