"""Faults and malformed requests: a killed server, and requests the server must refuse while it keeps serving.

The malformed requests are built with the official `tensorflow-serving-api` classes and sent through the official
stub, so they reach the server unchecked by `ServingClient` (which refuses most of them before sending).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from dags.ops.bench.sample_model import sample_columns
from deepfm_model.spec import features as fs
from serving.client import ServingClient, ServingError
from serving.push import push
from serving.server_process import server_process
from tests.serving.helpers import MODEL_NAME, local_only, request_streams, serving_servers

pytestmark = local_only

MAX_BATCH_ROWS = 64
MAX_REQUEST_BYTES = 256 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024


def test_killed_server_gives_unavailable_after_the_retries(tmp_path, exports, caplog):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    columns = sample_columns(16)
    answers: list[np.ndarray] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    with (
        server_process(base, MODEL_NAME, ["--poll-interval-s", "0.2", "--grace-s", "0"]) as (process, address),
        ServingClient(address, MODEL_NAME, timeout=5.0, max_retries=3, backoff_s=0.05) as client,
    ):

        def stream():
            while not stop.is_set():
                try:
                    answers.append(client.predict(columns))
                except BaseException as error:  # noqa: BLE001  (the test looks at whatever ended the stream)
                    failures.append(error)
                    return

        thread = threading.Thread(target=stream)
        thread.start()
        try:
            deadline = time.monotonic() + 60
            while len(answers) < 20 and thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(answers) >= 20, failures
            os.kill(process.pid, signal.SIGKILL)
            started = time.monotonic()
            thread.join(timeout=60)
            assert not thread.is_alive(), "the stream went on after the server was killed"
        finally:
            stop.set()
            thread.join()
    (error,) = failures
    assert isinstance(error, ServingError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert f"Predict on {address} failed: UNAVAILABLE" in str(error)
    assert sum("UNAVAILABLE, retry" in r.getMessage() for r in caplog.records) == 3
    assert time.monotonic() - started < 30  # retries are bounded: backoff 0.05 s doubling, 3 times
    assert all(a.shape == (16,) for a in answers)


def _request(columns: dict[str, np.ndarray]):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    for name, values in columns.items():
        if values.dtype == object:
            values = np.array([str(v).encode() for v in values], dtype=object).reshape(values.shape)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string, shape=values.shape))
        else:
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    return request


def _missing_feature():
    columns = sample_columns(4)
    del columns["occupation"]
    return _request(columns), "occupation"


def _wrong_dtype():
    columns = sample_columns(4)
    columns["age"] = columns["age"].astype(np.float64)
    return _request(columns), "age"


def _string_for_number():
    columns = sample_columns(4)
    columns["age"] = np.array(["24", "25", "26", "27"], dtype=object)
    return _request(columns), "age"


def _ragged_batch():
    columns = sample_columns(4)
    columns["movie_id"] = columns["movie_id"][:3]
    return _request(columns), "different numbers of rows"


def _empty_batch():
    return _request(sample_columns(0)), "Empty batch"


def _ten_times_the_row_limit():
    return _request(sample_columns(10 * MAX_BATCH_ROWS)), f"limit of {MAX_BATCH_ROWS}"


def _oversize_request():
    columns = sample_columns(MAX_BATCH_ROWS)
    columns["zip_prefix"] = np.array(["9" * 8192] * MAX_BATCH_ROWS, dtype=object)  # ~512 KiB in all
    return _request(columns), f"limit of {MAX_REQUEST_BYTES}"


def _matrix_for_a_vector():
    columns = sample_columns(4)
    columns["age"] = columns["age"].reshape(2, 2)
    return _request(columns), "age"


def _short_tensor_content():
    request = _request(sample_columns(4))
    request.inputs["age"].tensor_content = request.inputs["age"].tensor_content[:-4]
    return request, "age"


MALFORMED = {
    "missing_feature": _missing_feature,
    "wrong_dtype": _wrong_dtype,
    "string_for_number": _string_for_number,
    "ragged_batch": _ragged_batch,
    "empty_batch": _empty_batch,
    "ten_times_the_row_limit": _ten_times_the_row_limit,
    "oversize_request_bytes": _oversize_request,
    "matrix_for_a_vector": _matrix_for_a_vector,
    "short_tensor_content": _short_tensor_content,
}


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory, exports) -> Iterator[str]:
    base = tmp_path_factory.mktemp("limited_models")
    push(exports.good[0.0], base)
    with serving_servers() as start:
        _, address = start(base, max_batch_rows=MAX_BATCH_ROWS, max_request_bytes=MAX_REQUEST_BYTES,
                           max_message_bytes=MAX_MESSAGE_BYTES)  # fmt: skip
        yield address


@pytest.fixture(scope="module")
def official_stub(limited_server):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    options = [("grpc.max_send_message_length", 8 * MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(limited_server, options=options) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.mark.parametrize("make_request", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_invalid_argument_and_the_server_keeps_serving(official_stub, make_request):
    request, named = make_request()
    with pytest.raises(grpc.RpcError) as raised:
        official_stub.Predict(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert named in raised.value.details()
    response = official_stub.Predict(_request(sample_columns(4)), timeout=10)
    assert response.outputs["probability"].tensor_shape.dim[0].size == 4


def test_message_over_the_grpc_limit_is_refused_by_grpc_and_the_server_keeps_serving(official_stub):
    columns = sample_columns(MAX_BATCH_ROWS)
    columns["zip_prefix"] = np.array(["9" * 32768] * MAX_BATCH_ROWS, dtype=object)  # ~2 MiB
    with pytest.raises(grpc.RpcError) as raised:
        official_stub.Predict(_request(columns), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # gRPC's code; TF Serving's too
    assert official_stub.Predict(_request(sample_columns(4)), timeout=10).outputs["probability"].tensor_shape.dim


def test_malformed_requests_amid_good_traffic_lose_no_good_request(limited_server, official_stub):
    with request_streams(limited_server, lambda client: client.predict(sample_columns(8)).shape, threads=2) as good:
        codes = set()
        for _ in range(3):
            for make_request in MALFORMED.values():
                try:
                    official_stub.Predict(make_request()[0], timeout=10)
                except grpc.RpcError as error:
                    codes.add(error.code())
    errors, answered = good.errors, good.answers
    assert codes == {grpc.StatusCode.INVALID_ARGUMENT}
    assert not errors, errors[:3]
    assert answered and set(answered) == {(8,)}


def test_client_refuses_ragged_and_empty_batches_before_sending():
    columns = {name: list(values) for name, values in sample_columns(3).items()}
    columns[fs.FEATURE_NAMES[1]] = columns[fs.FEATURE_NAMES[1]][:2]
    with ServingClient("127.0.0.1:9", max_retries=0, timeout=1.0) as client:
        with pytest.raises(ServingError) as raised:
            client.predict(columns)
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ServingError, match="No rows") as raised:
            client.predict({name: [] for name in fs.FEATURE_NAMES})
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
