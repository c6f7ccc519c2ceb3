"""Warm-up: the records of `assets.extra/tf_serving_warmup_requests` replayed before a version serves."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.server.codecs import run_predict
from serving.server.signatures import LoadedVersion

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


def run_warmup(model: LoadedVersion, model_name: str) -> int:
    """Replay the version's warm-up PredictRequests; returns how many ran.

    Raises:
        ValueError: too many records, or a record that is not a PredictLog.
        RequestError: a warm-up request fails.
    """
    warmup_path = model.path / WARMUP_FILE
    if not warmup_path.is_file():
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(warmup_path)):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(f"More than {MAX_WARMUP_RECORDS} warm-up records in {warmup_path}")
        prediction_log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if prediction_log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"Unsupported warm-up log type {prediction_log.WhichOneof('log_type')} in {warmup_path}")
        run_predict(model, model_name, prediction_log.predict_log.request)
    return count
