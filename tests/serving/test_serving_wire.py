"""serving.wire and the client's tensor codec against the official TensorFlow / TF Serving classes, both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import any_pb2

from serving import wire
from serving.client import decode_tensor, encode_tensor, serialize_tensor

SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"  # the official message's

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def official():
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

    return tf, predict_pb2, get_model_metadata_pb2, get_model_status_pb2


def test_importing_the_client_does_not_import_tensorflow():
    code = (
        "import sys, serving.client\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving', 'keras'))\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_our_predict_request_parses_as_theirs(official):
    tf, predict_pb2, _, _ = official
    request = wire.PredictRequest(output_filter=["probability"])
    request.model_spec.name = "deepfm"
    request.model_spec.version.value = 7
    request.model_spec.signature_name = "serving_default"
    request.inputs["age"].CopyFrom(encode_tensor(np.array([24.0, 53.5], np.float32)))
    request.inputs["genres"].CopyFrom(encode_tensor(np.array(["Action|Comedy", "Drame é"], dtype=object)))
    request.inputs["count"].CopyFrom(encode_tensor(np.array([[1, 2], [3, 4]], np.int64)))

    theirs = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert theirs.model_spec.name == "deepfm"
    assert theirs.model_spec.WhichOneof("version_choice") == "version"
    assert theirs.model_spec.version.value == 7
    assert list(theirs.output_filter) == ["probability"]
    np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs["age"]), np.array([24.0, 53.5], np.float32))
    assert tf.make_ndarray(theirs.inputs["age"]).dtype == np.float32
    assert list(tf.make_ndarray(theirs.inputs["genres"])) == [b"Action|Comedy", "Drame é".encode()]
    np.testing.assert_array_equal(tf.make_ndarray(theirs.inputs["count"]), [[1, 2], [3, 4]])

    request.model_spec.version_label = "stable"
    theirs = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert theirs.model_spec.WhichOneof("version_choice") == "version_label"
    assert theirs.model_spec.version_label == "stable"


@pytest.mark.parametrize(
    "values",
    [
        np.array([0.25, 0.5, 0.75], np.float32),
        np.array([[1.5], [2.5]], np.float64),
        np.array([1, -2, 3], np.int32),
        np.array([2**40, -1], np.int64),
        np.array([True, False]),
        np.array([b"a", b"\xff\x00"], dtype=object),
    ],
    ids=["float32", "float64", "int32", "int64", "bool", "bytes"],
)
def test_their_tensors_decode_as_ours(official, values):
    tf, predict_pb2, _, _ = official
    response = predict_pb2.PredictResponse()
    response.model_spec.name = "deepfm"
    response.model_spec.version.value = 3
    response.outputs["packed"].CopyFrom(tf.make_tensor_proto(values))
    # Also the `*_val` encoding TF uses for small or constant tensors.
    response.outputs["single"].CopyFrom(tf.make_tensor_proto(values.reshape(-1)[0], shape=values.shape))

    ours = wire.PredictResponse.FromString(response.SerializeToString())
    assert ours.model_spec.version.value == 3
    decoded = decode_tensor(ours.outputs["packed"])
    np.testing.assert_array_equal(decoded, values)
    assert decoded.dtype == values.dtype
    np.testing.assert_array_equal(decode_tensor(ours.outputs["single"]), np.full(values.shape, values.reshape(-1)[0]))


def test_metadata_response_both_ways(official):
    tf, _, get_model_metadata_pb2, _ = official
    from tensorflow.core.protobuf import meta_graph_pb2

    signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["age"].name = "serving_default_age:0"
    signature.inputs["age"].dtype = tf.float32.as_datatype_enum
    signature.inputs["age"].tensor_shape.dim.add(size=-1)
    signature.outputs["probability"].dtype = tf.float32.as_datatype_enum
    signature.outputs["probability"].tensor_shape.unknown_rank = True
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def["serving_default"].CopyFrom(signature)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "deepfm"
    response.metadata["signature_def"].Pack(signature_map)

    ours = wire.GetModelMetadataResponse.FromString(response.SerializeToString())
    assert ours.metadata["signature_def"].type_url == SIGNATURE_DEF_MAP_TYPE_URL
    our_map = wire.unpack_signature_def_map(ours.metadata["signature_def"])
    age = our_map.signature_def["serving_default"].inputs["age"]
    assert (age.name, wire.DATA_TYPE_NAMES[age.dtype], age.tensor_shape.dim[0].size) == (
        "serving_default_age:0", "DT_FLOAT", -1,
    )  # fmt: skip
    assert our_map.signature_def["serving_default"].outputs["probability"].tensor_shape.unknown_rank

    back = wire.GetModelMetadataResponse(model_spec=wire.ModelSpec(name="deepfm"))
    packed = any_pb2.Any(type_url=SIGNATURE_DEF_MAP_TYPE_URL, value=our_map.SerializeToString())
    back.metadata["signature_def"].CopyFrom(packed)
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(back.SerializeToString())
    unpacked = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(unpacked)
    assert unpacked == signature_map

    request = wire.GetModelMetadataRequest(model_spec=wire.ModelSpec(name="deepfm"), metadata_field=["signature_def"])
    their_request = get_model_metadata_pb2.GetModelMetadataRequest.FromString(request.SerializeToString())
    assert list(their_request.metadata_field) == ["signature_def"]


def test_model_status_both_ways(official):
    _, _, _, get_model_status_pb2 = official
    state = get_model_status_pb2.ModelVersionStatus.State
    response = get_model_status_pb2.GetModelStatusResponse()
    response.model_version_status.add(version=2, state=state.AVAILABLE)
    failed = response.model_version_status.add(version=3, state=state.END)
    failed.status.error_code = 3
    failed.status.error_message = "broken"

    ours = wire.GetModelStatusResponse.FromString(response.SerializeToString())
    assert [(s.version, wire.MODEL_VERSION_STATE_NAMES[s.state]) for s in ours.model_version_status] == [
        (2, "AVAILABLE"), (3, "END"),
    ]  # fmt: skip
    assert (ours.model_version_status[1].status.error_code, ours.model_version_status[1].status.error_message) == (
        3, "broken",
    )  # fmt: skip
    assert get_model_status_pb2.GetModelStatusResponse.FromString(ours.SerializeToString()) == response

    request = wire.GetModelStatusRequest()
    request.model_spec.name = "deepfm"
    request.model_spec.version.value = 2
    their_request = get_model_status_pb2.GetModelStatusRequest.FromString(request.SerializeToString())
    assert their_request.model_spec.version.value == 2


def test_fields_outside_our_subset_survive_a_round_trip(official):
    tf, predict_pb2, _, _ = official
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "deepfm"
    request.inputs["z"].CopyFrom(tf.make_tensor_proto(np.array([1 + 2j], np.complex64)))
    request.inputs["h"].CopyFrom(tf.make_tensor_proto(np.array([1.5, 2.0], np.float16)))
    request.request_options.deterministic_mode = 1

    ours = wire.PredictRequest.FromString(request.SerializeToString())
    np.testing.assert_array_equal(decode_tensor(ours.inputs["h"]), np.array([1.5, 2.0], np.float16))
    assert predict_pb2.PredictRequest.FromString(ours.SerializeToString()) == request


def test_the_embedded_file_descriptor_is_the_built_one():
    assert wire.format_file_descriptor().endswith(")\n")
    from google.protobuf import descriptor_pb2

    embedded = descriptor_pb2.FileDescriptorProto.FromString(wire._FILE_DESCRIPTOR)
    assert embedded == wire._build_file(), "paste the output of `python -m serving.wire` into serving/wire.py"


def test_string_tensors_of_any_items_parse_as_theirs(official):
    tf, _, _, _ = official
    from tensorflow.core.framework import tensor_pb2

    columns = [
        np.array(["a", "", "Drame é", "x\x00y"], dtype=object),  # str, with the separator-like NUL
        np.array([b"\xff\xfe", "text", 7], dtype=object),  # bytes that are not UTF-8, and a number
        np.array([["ab", "c"], ["d", "ef"]]),  # numpy unicode, 2-D
        np.array([], dtype=object),
    ]
    for values in columns:
        theirs = tensor_pb2.TensorProto.FromString(serialize_tensor(values))
        expected = [v if isinstance(v, bytes) else str(v).encode() for v in values.reshape(-1).tolist()]
        assert tf.make_ndarray(theirs).reshape(-1).tolist() == expected
        assert list(tf.make_ndarray(theirs).shape) == list(values.shape)
    for values in (np.array([1.5, -2.0], ">f4"), np.arange(6, dtype=np.int32).reshape(2, 3).T, np.zeros((2, 0))):
        theirs = tensor_pb2.TensorProto.FromString(serialize_tensor(values))
        np.testing.assert_array_equal(tf.make_ndarray(theirs), values)


def test_the_clients_request_bytes_parse_as_theirs(official):
    """The bytes `ServingClient.predict` sends (written without a message) are the official PredictRequest."""
    from dags.ops.bench.sample_model import sample_columns
    from serving.client import PROBABILITY_OUTPUT, ServingClient
    from serving.inputs import to_feature_columns

    tf, predict_pb2, _, _ = official
    sent: list[bytes] = []
    with ServingClient("127.0.0.1:1", "deepfm", version_label="stable", signature_name="serving_default") as client:
        client._predict = lambda request, timeout: sent.append(request) or wire.PredictResponse()
        columns = to_feature_columns(sample_columns(5, seed=2))
        client.predict_tensors(columns, output_filter=[PROBABILITY_OUTPUT])
    theirs = predict_pb2.PredictRequest.FromString(sent[0])
    assert (theirs.model_spec.name, theirs.model_spec.version_label) == ("deepfm", "stable")
    assert theirs.model_spec.signature_name == "serving_default"
    assert list(theirs.output_filter) == [PROBABILITY_OUTPUT]
    assert set(theirs.inputs) == set(columns)
    for name, values in columns.items():
        decoded = tf.make_ndarray(theirs.inputs[name])
        expected = values.astype(bytes) if values.dtype == object else values
        np.testing.assert_array_equal(decoded, expected)


def test_requests_parse_as_theirs_for_edge_case_tensors(official):
    """`encode_predict_request` against `tf.make_tensor_proto` in an official PredictRequest, input by input:
    multi-byte varints (strings over 127 bytes, tensors over 127 and 16383 bytes, a long input name), empty
    strings, non-UTF-8 bytes, `str` and `bytes`, numpy 'U', 'S' and object arrays, 2-D, big-endian, strided,
    Fortran-order and zero-size arrays. The parsed messages must be equal (TF leaves out an empty
    `tensor_content` that the client writes, so the bytes may differ)."""
    from serving.client import encode_predict_request

    tf, predict_pb2, _, _ = official
    inputs = {
        "ascii": np.array(["196", "", "M", "Action|Comedy"], dtype=object),
        "long strings": np.array(["x" * 127, "y" * 128, "é" * 100, "z" * 20000], dtype=object),
        "bytes": np.array([b"\xff\xfe", b"", b"a" * 300, "text"], dtype=object),
        "unicode array": np.array([["ab", "Drame é"], ["", "d" * 200]]),
        "bytes array": np.array([b"ab", b"", b"\x00\xff"]),
        "many": np.array([str(i) for i in range(5000)], dtype=object),
        "float32": np.linspace(0, 1, 40, dtype=np.float32),  # 160 bytes: a two-byte length
        "float64 2-D": np.arange(6, dtype=np.float64).reshape(3, 2),
        "int64 big-endian": np.array([2**40, -1, 7], ">i8"),
        "int32 large": np.arange(5000, dtype=np.int32),  # 20000 bytes: a three-byte length
        "n" * 200: np.array([1.5, 2.5], np.float32),  # a key over 127 bytes
        "clé": np.array(["é"], dtype=object),
        "strided": np.arange(12, dtype=np.float32)[::3],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "zero-size": np.zeros((0, 3), np.float32),
        "no strings": np.array([], dtype=object),
    }
    spec = wire.ModelSpec(name="deepfm", signature_name="serving_default")
    for _ in range(2):  # the second time from the caches
        theirs = predict_pb2.PredictRequest.FromString(encode_predict_request(spec, inputs, ["probability"]))
        assert (theirs.model_spec.name, list(theirs.output_filter)) == ("deepfm", ["probability"])
        assert set(theirs.inputs) == set(inputs)
        for name, values in inputs.items():
            if values.dtype.kind in "UO":  # TF encodes `str` as UTF-8; ours does too
                expected = np.array([v if isinstance(v, bytes) else v.encode() for v in values.reshape(-1)], object)
                expected = expected.reshape(values.shape)
            else:  # `tensor_content` is little-endian; TF copies a big-endian array's bytes as they are
                expected = values.astype(values.dtype.newbyteorder("<"))
            assert theirs.inputs[name] == tf.make_tensor_proto(expected), name
            decoded = tf.make_ndarray(theirs.inputs[name])
            np.testing.assert_array_equal(decoded, expected.astype(decoded.dtype))
