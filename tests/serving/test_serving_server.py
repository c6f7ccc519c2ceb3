"""serving.server lifecycle: version switches, broken versions, warm-up, version policy, shutdown (local only)."""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest

from dags.ops.bench.sample_model import sample_columns
from serving.client import ServingClient, ServingError
from serving.push import push
from tests.serving.helpers import MODEL_NAME, local_only, request_streams

pytestmark = local_only


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def states(client: ServingClient) -> dict[int, str]:
    """Version -> state; empty while the server has seen no version (GetModelStatus answers NOT_FOUND)."""
    try:
        return {s.version: s.state for s in client.model_status()}
    except ServingError as error:
        if error.code != grpc.StatusCode.NOT_FOUND:
            raise
        return {}


def test_version_switch_while_requests_stream_loses_none(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    _, address = start_server(base)
    columns = sample_columns(16, seed=5)
    expected = {1: exports.reference(exports.good[0.0], columns), 2: exports.reference(exports.good[1.0], columns)}

    def send(client: ServingClient) -> tuple[float, float, int, np.ndarray]:
        sent = time.monotonic()
        outputs, version = client.predict_versioned(columns)
        return sent, time.monotonic(), version, outputs["probability"]

    with request_streams(address, send, threads=3) as stream:
        answers = stream.answers
        wait_for(lambda: len(answers) > 20, what="requests on version 1")
        push(exports.good[1.0], base)
        with ServingClient(address, MODEL_NAME) as client:
            wait_for(lambda: states(client) == {1: "END", 2: "AVAILABLE"}, what="the switch to version 2")
        seen = len(answers)
        wait_for(lambda: len(answers) > seen + 20, what="requests on version 2")
    errors = stream.errors
    assert not errors, errors[:3]
    assert {version for _, _, version, _ in answers} == {1, 2}
    # Threads append their answers in whatever order they finish, so the list's order says little across threads.
    # What the switch guarantees is real-time order: once any request has been answered by version 2, version 2 is
    # what the server resolves, so a request sent after that answer came back is never answered by version 1.
    first_on_2 = min(received for _, received, version, _ in answers if version == 2)
    back_on_1 = [sent - first_on_2 for sent, _, version, _ in answers if version == 1 and sent > first_on_2]
    assert not back_on_1, f"{len(back_on_1)} requests sent after version 2 answered got version 1: {back_on_1[:5]}"
    for _, _, version, probabilities in answers:
        np.testing.assert_allclose(probabilities, expected[version], rtol=1e-6)


def test_corrupt_version_leaves_the_previous_serving(tmp_path, exports, start_server, caplog):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    _, address = start_server(base)
    columns = sample_columns(4)
    with ServingClient(address, MODEL_NAME) as client:
        push(exports.corrupt, base)
        status = wait_for(lambda: [s for s in client.model_status() if s.version == 2 and s.state == "END"],
                          what="version 2 to fail")  # fmt: skip
        assert status[0].error_code != 0 and "version 2" in status[0].error_message
        assert states(client) == {2: "END", 1: "AVAILABLE"}
        assert client.predict_versioned(columns)[1] == 1
        assert any(r.levelname == "ERROR" and "version 2 failed" in r.getMessage() for r in caplog.records)

        push(exports.bad_warmup, base)  # loads, but its warm-up request is refused
        wait_for(lambda: states(client).get(3) == "END", what="version 3 to fail its warm-up")
        assert "age" in client.model_status(version=3)[0].error_message
        assert client.predict_versioned(columns)[1] == 1

        push(exports.good[2.0], base)  # a good push after broken ones is picked up
        wait_for(lambda: states(client).get(4) == "AVAILABLE" and states(client)[1] == "END", what="version 4")
        np.testing.assert_allclose(client.predict(columns), exports.reference(exports.good[2.0], columns), rtol=1e-6)
        with ServingClient(address, MODEL_NAME, version=1) as pinned, pytest.raises(ServingError) as raised:
            pinned.predict(columns)
        assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_warmup_runs_before_available(tmp_path, exports, start_server, caplog):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    caplog.set_level("INFO", logger="serving.server")
    start_server(base)
    assert any("version 1 AVAILABLE" in r.getMessage() and "2 warm-up requests" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_latest_n_policy_labels_and_removed_versions(tmp_path, exports, start_server):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    push(exports.good[1.0], base)
    push(exports.good[2.0], base)
    _, address = start_server(base, num_versions=2, version_labels={"stable": 2, "canary": 3})
    columns = sample_columns(4)
    with ServingClient(address, MODEL_NAME) as client:
        assert states(client) == {2: "AVAILABLE", 3: "AVAILABLE"}
        assert client.predict_versioned(columns)[1] == 3  # unpinned: the newest
        for label, version, export in (("stable", 2, exports.good[1.0]), ("canary", 3, exports.good[2.0])):
            with ServingClient(address, MODEL_NAME, version_label=label) as labelled:
                outputs, answered = labelled.predict_versioned(columns)
            assert answered == version
            np.testing.assert_allclose(outputs["probability"], exports.reference(export, columns), rtol=1e-6)
        shutil.rmtree(base / MODEL_NAME / "3")
        # The newest two on disk are now 1 and 2, as TF Serving's latest-N policy reads it.
        wait_for(lambda: states(client) == {1: "AVAILABLE", 2: "AVAILABLE", 3: "END"}, what="version 3 unloaded")
        assert client.predict_versioned(columns)[1] == 2


def test_empty_base_path_then_first_push(tmp_path, exports, start_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    base = tmp_path / "models"
    _, address = start_server(base)
    with ServingClient(address, MODEL_NAME) as client, grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(ServingError) as raised:
            client.predict(sample_columns(2))
        assert raised.value.code == grpc.StatusCode.NOT_FOUND
        push(exports.good[0.0], base)
        wait_for(lambda: states(client) == {1: "AVAILABLE"}, what="version 1")
        assert health.Check(check, timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_graceful_stop_finishes_in_flight_requests(tmp_path, exports, start_server):
    # A model name no other test serves: a stray client that reaches this port (port 0 hands out freed ports
    # again) is answered NOT_FOUND, so the count of OK answers below is this test's own.
    model_name = "graceful_stop"
    base = tmp_path / "models"
    push(exports.good[0.0], base, model_name)
    server, address = start_server(base, model_name=model_name)
    columns = sample_columns(2000)
    answers: list[np.ndarray] = []
    errors: list[ServingError] = []

    def call_until_refused():
        with ServingClient(address, model_name, max_retries=0) as client:
            while True:
                try:
                    answers.append(client.predict(columns))
                except ServingError as error:
                    errors.append(error)
                    return

    threads = [threading.Thread(target=call_until_refused) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 8, what="requests in flight")
        server.stop(grace=10)
    finally:
        server.stop(grace=0)  # after a failure above: the refusal ends every caller (else it does nothing)
        for thread in threads:
            thread.join()
    assert all(a.shape == (2000,) for a in answers)
    # None is cut off half-way: every request the server answered OK reached its client. Requests that arrive
    # after the stop began are refused: UNAVAILABLE from the server, or CANCELLED from gRPC for one still
    # queued, never handled, when gRPC itself stopped.
    answered = server.metrics.registry.get_sample_value(
        "serving_requests_total", {"model": model_name, "method": "Predict", "code": "OK"}
    )
    assert answered == len(answers)
    assert len(errors) == 4
    assert {e.code for e in errors} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, errors
    assert not [t.name for t in threading.enumerate() if t.name.startswith(f"{model_name}-grpc")]  # no handler left


def test_input_names_that_are_not_identifiers(tmp_path):
    """The server keys inputs on the SignatureDef names, which need not be Python identifiers."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.server import load_version, run_predict

    specs = {name: tf.TensorSpec([None], tf.float32, name=name) for name in ("user-id", "a.b", "2nd", "Zed")}

    class Module(tf.Module):
        @tf.function(input_signature=[specs])
        def serve(self, inputs):
            return {"y": inputs["user-id"] + 10.0 * inputs["a.b"] + 100.0 * inputs["2nd"] + 1000.0 * inputs["Zed"]}

    module = Module()
    tf.saved_model.save(module, str(tmp_path / "1"), signatures={"serving_default": module.serve})
    loaded = load_version(tmp_path / "1", 1)
    assert set(loaded.signatures["serving_default"].inputs) == set(specs)
    request = predict_pb2.PredictRequest()
    for value, name in enumerate(("user-id", "a.b", "2nd", "Zed"), start=1):
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.array([value], np.float32)))
    response = run_predict(loaded, MODEL_NAME, request)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [4321.0]


def test_the_flat_call_answers_as_the_public_call(exports):
    """The server calls signatures through TensorFlow's flat calling convention; the public call agrees with it."""
    import dataclasses

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serving.server import DEFAULT_SIGNATURE, ServingSignature, load_version, run_predict

    flat = load_version(exports.good[1.0], 1)
    signature_def = flat.signature_def_map.signature_def[DEFAULT_SIGNATURE]
    public_signature = ServingSignature(flat.signatures[DEFAULT_SIGNATURE].function, signature_def, flat_call=False)
    public = dataclasses.replace(flat, signatures={DEFAULT_SIGNATURE: public_signature})
    assert flat.signatures[DEFAULT_SIGNATURE].uses_flat_call and not public_signature.uses_flat_call
    columns = sample_columns(5, seed=3)
    request = predict_pb2.PredictRequest()
    for name, values in columns.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    flat_answer, public_answer = (
        tf.make_ndarray(run_predict(model, MODEL_NAME, request).outputs["probability"]) for model in (flat, public)
    )
    np.testing.assert_allclose(flat_answer, public_answer, rtol=1e-6)
    np.testing.assert_allclose(flat_answer, exports.reference(exports.good[1.0], columns), rtol=1e-6)
