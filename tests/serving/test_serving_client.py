"""Client conformance: the TF Serving API as the client sees it (local server, or TFSERVING_GRPC_ADDR)."""

from __future__ import annotations

import grpc
import numpy as np
import pandas as pd
import pytest

from dags.ops.bench.sample_model import sample_columns
from deepfm_model.spec import features as fs
from serving.client import InputError, ServingClient, ServingError
from serving.ranking import Ranker, request_columns
from tests.serving.helpers import REMOTE_ADDRESS, local_only, sample_rows


@pytest.fixture
def client(endpoint):
    with ServingClient(endpoint.address, endpoint.model_name, timeout=10.0) as client:
        yield client


def test_predict_equals_the_saved_model(client, endpoint, exports):
    columns = sample_columns(64)
    probabilities = client.predict(columns)
    assert probabilities.shape == (64,) and probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_allclose(client.predict(sample_rows(64)), probabilities, rtol=1e-6)
    if endpoint.export is not None:
        np.testing.assert_allclose(probabilities, exports.reference(endpoint.export, columns), rtol=1e-6)


def test_predict_splits_large_inputs(endpoint):
    columns = sample_columns(50, seed=3)
    with (
        ServingClient(endpoint.address, endpoint.model_name) as whole,
        ServingClient(endpoint.address, endpoint.model_name, max_batch_rows=7) as split,
    ):
        np.testing.assert_allclose(split.predict(columns), whole.predict(columns), rtol=1e-6)


def test_metadata_matches_the_feature_spec(client, endpoint):
    metadata = client.metadata()
    assert metadata.name == endpoint.model_name
    if endpoint.version is not None:
        assert metadata.version == endpoint.version
    signature = metadata.signatures["serving_default"]
    assert set(signature.inputs) == set(fs.FEATURE_NAMES)
    for feature in fs.FEATURES:
        expected = "DT_FLOAT" if fs.serving_dtype(feature) == "float32" else "DT_STRING"
        assert signature.inputs[feature.name].dtype == expected, feature.name
        assert signature.inputs[feature.name].shape == (None,)
    assert signature.outputs["probability"].dtype == "DT_FLOAT"
    client.check_signature()


def test_model_status_reports_the_served_version(client, endpoint):
    statuses = client.model_status()
    available = [s for s in statuses if s.state == "AVAILABLE"]
    assert available and all(s.error_code == 0 for s in available)
    if endpoint.version is not None:
        assert [s.version for s in available] == [endpoint.version]
        assert client.model_status(version=endpoint.version)[0].state == "AVAILABLE"


def test_version_and_label_pinning(endpoint):
    if endpoint.version is None:
        pytest.skip("the remote server's versions and labels are unknown")
    columns = sample_columns(4)
    with ServingClient(endpoint.address, endpoint.model_name, version=endpoint.version) as pinned:
        outputs, version = pinned.predict_versioned(columns)
        assert version == endpoint.version and set(outputs) == {"probability", "logit"}
        assert pinned.metadata().version == endpoint.version
    with ServingClient(endpoint.address, endpoint.model_name, version_label="stable") as labelled:
        assert labelled.predict_versioned(columns)[1] == endpoint.version


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"model_name": "no_such_model"}, grpc.StatusCode.NOT_FOUND),
        ({"version": 424242}, grpc.StatusCode.NOT_FOUND),
        # TF Serving answers an unknown label with INVALID_ARGUMENT ("Unrecognized servable version label").
        ({"version_label": "no_such_label"}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["model", "version", "label"],
)
def test_unknown_model_version_or_label(endpoint, options, code):
    options = {"model_name": endpoint.model_name, **options}
    with ServingClient(endpoint.address, **options) as client:
        with pytest.raises(ServingError) as raised:
            client.predict(sample_columns(2))
        assert raised.value.code == code
        if "version_label" not in options:
            with pytest.raises(ServingError) as raised:
                client.metadata()
            assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_model_status_of_unknown_model_or_version(endpoint, client):
    with ServingClient(endpoint.address, "no_such_model") as other, pytest.raises(ServingError) as raised:
        other.model_status()
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(ServingError) as raised:
        client.model_status(version=424242)
    assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_server_refuses_missing_input_then_keeps_serving(client):
    columns = sample_columns(3)
    del columns["zip_prefix"]
    with pytest.raises(ServingError) as raised:
        client.predict_tensors(columns)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "zip_prefix" in raised.value.details
    assert client.predict(sample_columns(3)).shape == (3,)


def test_server_refuses_wrong_dtype_then_keeps_serving(client, endpoint):
    columns = sample_columns(3)
    columns["age"] = np.array(["24", "25", "26"], dtype=object)
    with pytest.raises(ServingError) as raised:
        client.predict_tensors(columns)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    if endpoint.export is not None:  # TF Serving names the argument by position ("arg[3]"); ours by name
        assert "age" in raised.value.details
    columns = sample_columns(3)
    columns["gender"] = np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(ServingError) as raised:
        client.predict_tensors(columns)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    if endpoint.export is not None:
        assert "gender" in raised.value.details
    assert client.predict(sample_columns(3)).shape == (3,)


@local_only
def test_server_refuses_unknown_output_filter_and_signature(client, endpoint):
    with pytest.raises(ServingError) as raised:
        client.predict_tensors(sample_columns(2), output_filter=["no_such_output"])
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.predict_tensors(sample_columns(2), output_filter=["logit"]).keys() == {"logit"}
    with (
        ServingClient(endpoint.address, endpoint.model_name, signature_name="nope") as other,
        pytest.raises(ServingError) as raised,
    ):
        other.predict(sample_columns(2))
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("age"), "age"),
        (lambda c: c.update(extra=[1.0, 2.0]), "extra"),
        (lambda c: c.update(age=["24", "53"]), "age"),
        (lambda c: c.update(gender=[0.5, 1.5]), "gender"),
        (lambda c: c.update(release_year=[1990.0]), "release_year"),
        (lambda c: c.update(user_pos_rate=[None, 0.5]), "user_pos_rate"),
    ],
    ids=["missing", "unknown", "string_for_numeric", "float_for_string", "short_column", "none"],
)
def test_client_checks_inputs_before_sending(change, message):
    columns = {name: list(values) for name, values in sample_columns(2).items()}
    change(columns)
    # Nothing listens on port 9: a request that got sent would fail with UNAVAILABLE, not InputError.
    with (
        ServingClient("127.0.0.1:9", max_retries=0, timeout=1.0) as client,
        pytest.raises(InputError, match=message) as raised,
    ):
        client.predict(columns)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_client_accepts_integer_ids_and_genre_lists(client):
    columns = sample_columns(3)
    as_python = {name: list(values) for name, values in columns.items()}
    as_python["user_id"] = [int(v) for v in columns["user_id"]]
    as_python["genres"] = [v.split(fs.MULTI_VALUE_SEPARATOR) if v else [] for v in columns["genres"]]
    as_python["age"] = [int(v) for v in columns["age"]]
    columns["age"] = np.array([int(v) for v in columns["age"]], np.float32)
    np.testing.assert_allclose(client.predict(as_python), client.predict(columns), rtol=1e-6)


def test_unreachable_server_is_retried_then_unavailable(caplog):
    with (
        ServingClient("127.0.0.1:9", timeout=1.0, max_retries=2, backoff_s=0.01) as client,
        pytest.raises(ServingError) as raised,
    ):
        client.model_status()
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert sum("UNAVAILABLE, retry" in r.getMessage() for r in caplog.records) == 2


def columns_reader(columns: dict[str, np.ndarray], movie_ids: list[int]):
    """A feature reader answering from fixed columns, one row per known movie; other movies get no values."""
    rows = {str(m): i for i, m in enumerate(movie_ids)}

    def read(user_id: str, candidates: list[str]) -> dict[str, list]:
        read.requests.append((user_id, candidates))
        picks = [rows.get(m) for m in candidates]
        features = {name: [None if i is None else values[i] for i in picks] for name, values in columns.items()}
        return {**features, "user_id": [user_id] * len(candidates), "movie_id": list(candidates)}

    read.requests = []
    return read


def test_rank_sorts_candidates_by_score(client):
    movie_ids = [10, 20, 30, 40, 50]
    columns = sample_columns(5, seed=7)
    columns["user_id"] = np.array(["196"] * 5, dtype=object)
    columns["movie_id"] = np.array([str(m) for m in movie_ids], dtype=object)
    reader = columns_reader(columns, movie_ids)
    ranked = Ranker(client, reader).rank(196, movie_ids)
    assert reader.requests == [("196", [str(m) for m in movie_ids])]
    expected = client.predict(columns)
    assert [m for m, _ in ranked] == [movie_ids[i] for i in np.argsort(-expected, kind="stable")]
    np.testing.assert_allclose([s for _, s in ranked], np.sort(expected)[::-1], rtol=1e-6)
    assert Ranker(client, reader).rank(196, []) == []


def test_rank_scores_unknown_movies_through_the_missing_values(client):
    columns = sample_columns(1, seed=7)
    reader = columns_reader(columns, [10])
    ranked = dict(Ranker(client, reader).rank(196, [10, 99]))  # 99: the reader has no value of it
    cold = request_columns(reader("196", ["99"]), 1)
    assert cold["genres"].tolist() == [""] and np.isnan(cold["release_year"]).all()
    np.testing.assert_array_equal([ranked[99]], client.predict(cold))  # NaN where the model passes NaN through


def test_request_columns_fill_missing_values_as_the_signature_takes_them():
    frame = pd.DataFrame({name: list(values) for name, values in sample_columns(3).items()})
    frame.loc[0, "gender"], frame.loc[1, "genres"], frame.loc[2, "age"] = None, np.nan, np.nan
    columns = request_columns(frame, 3)
    assert list(columns) == list(fs.FEATURE_NAMES)
    assert columns["gender"][0] == "" and columns["genres"][1] == "" and np.isnan(columns["age"][2])
    assert columns["age"].dtype == np.float32 and columns["gender"].dtype == object
    assert frame.loc[0, "gender"] is None  # the reader's values are left as they were
    with pytest.raises(InputError, match="no `age`"):
        request_columns(frame.drop(columns="age"), 3)
    with pytest.raises(InputError, match="`user_id`, expected \\(4,\\)"):
        request_columns(frame, 4)
    with pytest.raises(InputError, match="`age` is numeric"):
        request_columns(frame.assign(age=["x", "y", "z"]), 3)


@local_only
def test_health_service_reports_serving(endpoint):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert not REMOTE_ADDRESS
    with grpc.insecure_channel(endpoint.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "tensorflow.serving.PredictionService", endpoint.model_name):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
