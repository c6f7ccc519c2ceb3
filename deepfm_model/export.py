"""Export a SavedModel with a raw-feature `serving_default` signature and TF Serving warm-up requests.

Signature `serving_default`:
- inputs: one 1-D tensor per feature of `features.FEATURES`, named after it; `tf.string` for categorical
  and multi-valued features (values joined by `features.MULTI_VALUE_SEPARATOR`), `tf.float32` for numeric
  ones, raw (preprocessing runs inside the graph);
- outputs: `"probability"`, float32 `[batch]`, what ranking sorts by; with the pick head (`model.py`) also
  `"pick"` and `"like"`, float32 `[batch]` each (`probability` ranks by `odds(pick) * like` of the two heads; with the like
  tower, `like` is the tower's: `model.with_like_tower`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from deepfm_model.predict import SIGNATURE_KEY, TrainedModel, output_names
from deepfm_model.preprocessing import frame_to_raw
from deepfm_model.spec import features as spec

MODEL_SPEC_NAME = "deepfm"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def serving_input_signature() -> dict[str, tf.TensorSpec]:
    """TensorSpec per feature, keyed and named by feature name."""
    return {
        f.name: tf.TensorSpec(shape=[None], dtype=tf.as_dtype(spec.serving_dtype(f)), name=f.name)
        for f in spec.FEATURES
    }


def export_saved_model(
    trained: TrainedModel,
    export_dir: str | Path,
    warmup_frame: pd.DataFrame | None = None,
    model_name: str = MODEL_SPEC_NAME,
) -> Path:
    """Write the SavedModel (preprocessing + DeepFM) to `export_dir`, plus warm-up requests when rows are given.

    Requires the TensorFlow Keras backend (the graph mixes TensorFlow preprocessing with the model). The export
    is written to a hidden folder beside `export_dir` and renamed to it when whole, so a process killed while
    exporting leaves no `export_dir` that looks finished (a retried training takes an existing one as done).

    Args:
        trained: model and fitted preprocessing.
        export_dir: target folder; one that exists must be empty or hold a SavedModel, which is replaced.
        warmup_frame: a few raw rows written as TF Serving warm-up requests; `None` writes none.
        model_name: `model_spec.name` of the warm-up requests.

    Returns:
        `export_dir` as a `Path`.
    """
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"Export needs the TensorFlow Keras backend. Received: `keras.backend.backend()={backend!r}`"
        )
    export_dir = Path(export_dir)
    if export_dir.is_dir() and any(export_dir.iterdir()) and not (export_dir / "saved_model.pb").is_file():
        raise ValueError(
            f"`export_dir` holds files but no SavedModel; refusing to replace it. Received: `export_dir={str(export_dir)!r}`"
        )
    model, preprocessor = trained.model, trained.preprocessor

    names = output_names(trained)

    def serve(features):
        outputs = tf.cast(model(preprocessor(features), training=False), tf.float32)  # (batch, outputs)
        return {name: outputs[:, i] for i, name in enumerate(names)}  # (batch,) each

    archive = keras.export.ExportArchive()
    archive.track(model)
    for layer in preprocessor.tracked_layers():
        archive.track(layer)
    archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[serving_input_signature()])
    partial = export_dir.with_name(f".{export_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    archive.write_out(str(partial), verbose=False)
    if warmup_frame is not None and len(warmup_frame):
        write_warmup_requests(partial, warmup_frame, model_name)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.rename(partial, export_dir)
    return export_dir


def write_warmup_requests(export_dir: str | Path, frame: pd.DataFrame, model_name: str = MODEL_SPEC_NAME) -> Path:
    """Write `<export_dir>/assets.extra/tf_serving_warmup_requests`: one PredictRequest per row of `frame`."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    path = Path(export_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = frame_to_raw(frame)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in range(len(frame)):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=SIGNATURE_KEY)
            )
            for feature in spec.FEATURES:
                value = raw[feature.name][row : row + 1]
                if feature.kind is spec.Kind.NUMERIC:
                    proto = tf.make_tensor_proto(value, dtype=tf.float32)
                else:
                    proto = tf.make_tensor_proto([v.encode() for v in value], dtype=tf.string)
                request.inputs[feature.name].CopyFrom(proto)
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path
