"""A tiny SavedModel with the DeepFM serving signature, for the serving tests and `serving.bench`.

The fixture model takes every feature of `features.FEATURES` by name, as the exported DeepFM does, and returns
`{"probability": sigmoid(bias + a deterministic function of the inputs), "logit": ...}`; `bias` tells versions
apart. TensorFlow is imported inside `build_exports`, so importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfm_model.spec import features as fs
from tests.serving.helpers import MODEL_NAME, sample_columns


@dataclass(frozen=True)
class Exports:
    """Exported fixture SavedModels, and a way to call one directly."""

    good: dict[float, Path]  # bias -> export folder (with two warm-up records)
    bad_warmup: Path  # a valid SavedModel whose warm-up request sends `age` as a string
    corrupt: Path  # `saved_model.pb` holds garbage
    reference: Callable[[Path, dict[str, np.ndarray]], np.ndarray]


def build_exports(root: Path) -> Exports:
    """Save the fixture SavedModels under `root`: three good versions, a bad warm-up, a corrupt one."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    specs = {
        f.name: tf.TensorSpec([None], tf.float32 if fs.serving_dtype(f) == "float32" else tf.string, name=f.name)
        for f in fs.FEATURES
    }

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

    def save(path: Path, bias: float, warmup: dict[str, np.ndarray] | None) -> Path:
        module = TinyRanker(bias)
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve.get_concrete_function()})
        if warmup is not None:
            (path / "assets.extra").mkdir()
            request = predict_pb2.PredictRequest()
            request.model_spec.name = MODEL_NAME
            for name, values in warmup.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
            record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            with tf.io.TFRecordWriter(str(path / "assets.extra" / "tf_serving_warmup_requests")) as writer:
                for _ in range(2):
                    writer.write(record.SerializeToString())
        return path

    warmup = sample_columns(3, seed=99)
    good = {bias: save(root / f"bias_{bias}", bias, warmup) for bias in (0.0, 1.0, 2.0)}
    bad_warmup = save(root / "bad_warmup", 3.0, {**warmup, "age": np.array(["x", "y", "z"], dtype=object)})
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00 this is not a SavedModel \xff" * 10)
    (corrupt / "variables").mkdir()

    loaded: dict[Path, object] = {}

    def reference(export_dir: Path, columns: dict[str, np.ndarray]) -> np.ndarray:
        if export_dir not in loaded:
            loaded[export_dir] = tf.saved_model.load(str(export_dir))
        function = loaded[export_dir].signatures["serving_default"]
        tensors = {name: tf.constant(values, dtype=specs[name].dtype) for name, values in columns.items()}
        return function(**tensors)["probability"].numpy()

    return Exports(good, bad_warmup, corrupt, reference)
