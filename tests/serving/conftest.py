"""Fixtures of the serving tests: a tiny SavedModel with the serving signature, a local server, sample rows.

The fixture model takes every feature of `features.FEATURES` by name, as the exported DeepFM does, and returns
`{"probability": sigmoid(bias + a deterministic function of the inputs)}`; `bias` tells versions apart.

`TFSERVING_GRPC_ADDR=host:port` points the client conformance tests at a running server (real TF Serving
from `docker/`, serving model `TFSERVING_MODEL_NAME`, default `deepfm`) instead of the local one; the tests that
need to control the model folder are then skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from deepfm_model import features as fs
from tests.serving.helpers import MODEL_NAME, REMOTE_ADDRESS, REMOTE_MODEL_NAME, sample_columns


@dataclass(frozen=True)
class Exports:
    """Exported fixture SavedModels, and a way to call one directly."""

    good: dict[float, Path]  # bias -> export folder (with two warm-up records)
    bad_warmup: Path  # a valid SavedModel whose warm-up request sends `age` as a string
    corrupt: Path  # `saved_model.pb` holds garbage
    reference: Callable[[Path, dict[str, np.ndarray]], np.ndarray]


def _build_exports(root: Path) -> Exports:
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


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return _build_exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., tuple[object, str]]]:
    """Start local servers (stopped at the end of the session): `start(base_path, **config) -> (server, address)`."""
    from serving.server import ModelServer, ServerConfig

    servers = []

    def start(base_path: Path, **overrides) -> tuple[ModelServer, str]:
        config = ServerConfig(base_path=str(base_path), model_name=MODEL_NAME, port=0, poll_interval_s=0.1,
                              grace_s=1.0, **overrides)  # fmt: skip
        server = ModelServer(config)
        port = server.start()
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=0)


@dataclass(frozen=True)
class Endpoint:
    """Where the conformance tests send requests; `export` is the SavedModel served (None when remote)."""

    address: str
    model_name: str
    export: Path | None
    version: int | None


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory, exports, start_server) -> Endpoint:
    if REMOTE_ADDRESS:
        return Endpoint(REMOTE_ADDRESS, REMOTE_MODEL_NAME, None, None)
    from serving.push import push

    base = tmp_path_factory.mktemp("conformance_models")
    version = push(exports.good[0.0], base, MODEL_NAME)
    _, address = start_server(base, version_labels={"stable": version, "missing": 42})
    return Endpoint(address, MODEL_NAME, exports.good[0.0], version)
