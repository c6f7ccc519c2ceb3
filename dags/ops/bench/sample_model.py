"""A small SavedModel with the DeepFM serving signature, and sample columns to send it.

What the serving benchmark (`dags.ops.bench.serving`) serves when there is no real export; the serving tests
serve it too. The sample model takes every feature of `deepfm_model.spec.features.FEATURES` by name and serving
dtype, as the exported DeepFM does, and returns `{"probability": sigmoid(bias + a deterministic function of the
inputs), "logit": ...}`; `bias` tells versions apart. TensorFlow is imported inside the functions that need it,
so importing this module is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deepfm_model.spec import features as fs
from deepfm_model.spec.serving import SIGNATURE_KEY

WARMUP_RECORDS = 2  # how many times `save_sample_model` writes its warm-up request


def sample_columns(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid serving columns for `rows` rows: strings for categorical features, float32 for numeric ones."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for feature in fs.FEATURES:
        if feature.kind is fs.Kind.NUMERIC:
            low = feature.min_value if feature.min_value is not None else 0.0
            high = feature.max_value if feature.max_value is not None else 500.0
            columns[feature.name] = rng.uniform(low, high, rows).astype(np.float32)
        elif feature.kind is fs.Kind.MULTI_CATEGORICAL:
            values = feature.allowed or tuple(str(v) for v in range(1, 1000))  # open domain: ids, as below
            picks = [rng.choice(values, size=rng.integers(0, 3), replace=False) for _ in range(rows)]
            columns[feature.name] = np.array([fs.MULTI_VALUE_SEPARATOR.join(p) for p in picks], dtype=object)
        elif feature.allowed:
            columns[feature.name] = np.array(rng.choice(feature.allowed, rows), dtype=object)
        else:
            columns[feature.name] = np.array([str(v) for v in rng.integers(1, 1000, rows)], dtype=object)
    return columns


def input_specs() -> dict[str, Any]:
    """The `tf.TensorSpec` of every input of the serving signature: `[None]`, float32 or string, by feature name."""
    import tensorflow as tf

    return {
        f.name: tf.TensorSpec([None], tf.float32 if fs.serving_dtype(f) == "float32" else tf.string, name=f.name)
        for f in fs.FEATURES
    }


def save_sample_model(
    path: Path, bias: float = 0.0, warmup: dict[str, np.ndarray] | None = None, model_name: str = "deepfm"
) -> Path:
    """Save the sample SavedModel to `path` (signature `serving_default`); return `path`.

    Args:
        path: the export folder to create.
        bias: the model's bias, which tells versions apart.
        warmup: columns of a warm-up request, written `WARMUP_RECORDS` times to `assets.extra/` (none when None).
        model_name: the model name in the warm-up request.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    from serving.server.warmup import WARMUP_FILE

    specs = input_specs()

    class TinyRanker(tf.Module):
        def __init__(self, bias: float):
            super().__init__()
            self.bias = tf.Variable(bias, dtype=tf.float32)

        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            logit = self.bias
            for i, feature in enumerate(fs.FEATURES):
                x = inputs[feature.name]
                if x.dtype == tf.string:
                    x = tf.cast(tf.strings.to_hash_bucket_fast(x, 97), tf.float32) / 97.0 - 0.5  # (batch,)
                else:
                    x = tf.math.log1p(tf.abs(x)) / 5.0  # (batch,)
                logit = logit + (0.3 if i % 2 else -0.2) * x
            return {"probability": tf.sigmoid(logit), "logit": logit}

    module = TinyRanker(bias)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
    if warmup is not None:
        (path / WARMUP_FILE).parent.mkdir()
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        for name, values in warmup.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        with tf.io.TFRecordWriter(str(path / WARMUP_FILE)) as writer:
            for _ in range(WARMUP_RECORDS):
                writer.write(record.SerializeToString())
    return path
