"""The thin gRPC client of the ranking model: `ServingClient`.

It speaks TF Serving's API (PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus), so it
works against `tensorflow/serving` and against `serving.server` alike. It imports neither TensorFlow nor
`tensorflow_serving`: the messages come from `serving.wire`, tensors are encoded from numpy here.

Inputs are checked against the feature spec before anything is sent (`serving.inputs.to_feature_columns`);
failures raise `serving.errors.ServingError` (`InputError` for inputs off the spec), importable from here too.

    with ServingClient("127.0.0.1:8500") as client:
        probabilities = client.predict([{"user_id": "196", "movie_id": "242", ...}])

To rank candidates with their online features, use `serving.ranking.Ranker` over this client.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc
import numpy as np

from deepfm_model.spec import features as fs
from deepfm_model.spec.serving import PROBABILITY, SIGNATURE_KEY
from serving import wire
from serving.errors import InputError, ServingError
from serving.inputs import to_feature_columns

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE, PROBABILITY_OUTPUT = SIGNATURE_KEY, PROBABILITY
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_NUMPY_TO_DATA_TYPE = {
    np.dtype(np.float32): "DT_FLOAT",
    np.dtype(np.float64): "DT_DOUBLE",
    np.dtype(np.int32): "DT_INT32",
    np.dtype(np.int64): "DT_INT64",
    np.dtype(np.bool_): "DT_BOOL",
}
# DataType -> (numpy dtype, the repeated `*_val` field holding values when `tensor_content` is empty)
_DATA_TYPE_TO_NUMPY = {
    "DT_FLOAT": (np.float32, "float_val"), "DT_DOUBLE": (np.float64, "double_val"), "DT_HALF": (np.float16, "half_val"),
    "DT_INT8": (np.int8, "int_val"), "DT_INT16": (np.int16, "int_val"), "DT_INT32": (np.int32, "int_val"),
    "DT_UINT8": (np.uint8, "int_val"), "DT_UINT16": (np.uint16, "int_val"), "DT_INT64": (np.int64, "int64_val"),
    "DT_UINT32": (np.uint32, "uint32_val"), "DT_UINT64": (np.uint64, "uint64_val"), "DT_BOOL": (np.bool_, "bool_val"),
}  # fmt: skip
_SERVING_DTYPE_TO_DATA_TYPE = {"float32": "DT_FLOAT", "string": "DT_STRING"}


@dataclass(frozen=True)
class VersionStatus:
    """State of one model version, as ModelService.GetModelStatus reports it."""

    version: int
    state: str  # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: int  # 0 when the version is fine; a google.rpc code otherwise
    error_message: str


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature: dtype name (`DT_FLOAT`) and shape (`None` for unknown sizes)."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class Signature:
    """One signature of the served model."""

    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


@dataclass(frozen=True)
class ModelMetadata:
    """The served model's name, the version that answered and its signatures."""

    name: str
    version: int
    signatures: dict[str, Signature]


def encode_tensor(values: np.ndarray | Sequence[Any], out: Any = None) -> Any:
    """Encode a numpy array as a `TensorProto`: raw bytes for numbers, `string_val` for strings.

    Strings are UTF-8 encoded; bytes are sent as they are. `out` is an empty `TensorProto` to fill (say
    `request.inputs[name]`); a new one when `None`. The message is parsed from `serialize_tensor`.
    """
    encoded = serialize_tensor(values)
    if out is None:
        return wire.TensorProto.FromString(encoded)
    out.MergeFromString(encoded)
    return out


def encode_predict_request(
    model_spec: Any, inputs: Mapping[str, np.ndarray | Sequence[Any]], output_filter: Sequence[str] = ()
) -> bytes:
    """The serialized `PredictRequest` of `inputs`, written straight from the `serialize_tensor` bytes.

    This is what `ServingClient` sends (its Predict call passes bytes through): `model_spec` (a `ModelSpec`,
    field 1) serialized once; each input a map entry (field 2) holding the name (key, field 1) and the
    TensorProto (value, field 2); `output_filter` (field 3). No message is built or parsed on the way.
    """
    spec = model_spec.SerializeToString()
    parts = [b"\x0a", _varint(len(spec)), spec]
    for name, values in inputs.items():
        tensor = serialize_tensor(values)
        parts += (_input_entry_prefix(name, len(tensor)), tensor)
    for name in output_filter:
        encoded = name.encode()
        parts += [b"\x1a", _varint(len(encoded)), encoded]
    return b"".join(parts)


def _pass_bytes(request: bytes) -> bytes:
    return request


def serialize_tensor(values: np.ndarray | Sequence[Any]) -> bytes:
    """The serialized `TensorProto` of a numpy array, as a request carries it (see `encode_tensor`).

    The bytes are written here (dtype, shape, then the values) rather than through a message set field by field:
    numbers go in whole as `tensor_content`, and a column of `str` is encoded by one protobuf call in C.
    """
    array = np.asarray(values)
    if array.dtype.kind in "USO":
        header = _tensor_header(wire.DATA_TYPES["DT_STRING"], array.shape)
        items = array.tolist() if array.ndim == 1 else array.reshape(-1).tolist()
        values_proto = wire.TensorStringValues()
        try:
            values_proto.string_val.extend(items)  # all `str`: the common case
        except (TypeError, ValueError):  # bytes that are not UTF-8, or objects that are not strings
            values_proto = wire.TensorProto()
            values_proto.string_val.extend(
                [item if isinstance(item, bytes) else str(item).encode("utf-8") for item in items]
            )
        return header + values_proto.SerializeToString()
    prefix = _packed_tensor_prefix(array.dtype, array.shape)
    if prefix is not None:
        return prefix + array.tobytes()  # C order, whatever the layout
    if array.dtype.byteorder == ">" and array.dtype.newbyteorder("<") in _NUMPY_TO_DATA_TYPE:
        return serialize_tensor(array.astype(array.dtype.newbyteorder("<")))
    raise InputError(f"Cannot encode a tensor of dtype {array.dtype}")


@functools.lru_cache(maxsize=1024)
def _packed_tensor_prefix(dtype: np.dtype, shape: tuple[int, ...]) -> bytes | None:
    """Dtype, shape and the `tensor_content` tag and length of a TensorProto of packed numbers; `None` for a
    dtype not sent as it is (big-endian, unsupported). Depends on dtype and shape only: cached."""
    data_type = _NUMPY_TO_DATA_TYPE.get(dtype)
    if data_type is None:
        return None
    nbytes = math.prod(shape) * dtype.itemsize
    return _tensor_header(wire.DATA_TYPES[data_type], shape) + b"\x22" + _varint(nbytes)


@functools.lru_cache(maxsize=1024)
def _tensor_header(data_type: int, shape: tuple[int, ...]) -> bytes:
    """The serialized `dtype` (field 1) and `tensor_shape` (field 2) of a TensorProto."""
    dims = b"".join(b"\x12" + _varint(1 + len(_varint(size))) + b"\x08" + _varint(size) for size in shape)
    return b"\x08" + _varint(data_type) + b"\x12" + _varint(len(dims)) + dims


@functools.lru_cache(maxsize=4096)
def _input_entry_prefix(name: str, tensor_size: int) -> bytes:
    """Everything of a PredictRequest `inputs` entry (field 2) before its `tensor_size`-byte TensorProto: the
    entry's tag and length, its key (field 1) and the value's tag and length (field 2).

    One cached call per input. Numeric tensors of a batch size always have the same size; string tensors take
    a few hundred sizes per feature and batch size, so that steady traffic hits too (a miss costs about what
    writing the three parts in `encode_predict_request` would).
    """
    key = name.encode()
    body = b"\x0a" + _varint(len(key)) + key + b"\x12" + _varint(tensor_size)
    return b"\x12" + _varint(len(body) + tensor_size) + body


@functools.lru_cache(maxsize=65536)
def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_tensor(proto: Any) -> np.ndarray:
    """Decode a `TensorProto` (either encoding: `tensor_content` or the `*_val` fields) into numpy.

    Strings decode to an object array of `bytes`. A `*_val` field with a single value for a larger shape is
    broadcast, as TensorFlow does.
    """
    dtype_name = wire.DATA_TYPE_NAMES.get(proto.dtype, f"DataType({proto.dtype})")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    size = int(np.prod(shape, dtype=np.int64))
    if dtype_name == "DT_STRING":
        values = np.empty(len(proto.string_val), dtype=object)
        values[:] = list(proto.string_val)
    elif dtype_name in _DATA_TYPE_TO_NUMPY:
        np_dtype, field = _DATA_TYPE_TO_NUMPY[dtype_name]
        if proto.tensor_content:
            values = np.frombuffer(proto.tensor_content, dtype=np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
        elif dtype_name == "DT_HALF":
            values = np.array(proto.half_val, dtype=np.uint16).view(np.float16)
        else:
            values = np.array(getattr(proto, field), dtype=np_dtype)
    else:
        raise ServingError(f"Cannot decode a tensor of dtype {dtype_name}", grpc.StatusCode.UNIMPLEMENTED)
    if values.size == size:
        return values.reshape(shape)
    if values.size == 1:
        return np.full(shape, values[0], dtype=values.dtype)
    if values.size == 0:
        return np.zeros(shape, dtype=values.dtype)
    raise ServingError(f"Tensor of shape {list(shape)} holds {values.size} values", grpc.StatusCode.DATA_LOSS)


class ServingClient:
    """Client of one model on a TF Serving-compatible server.

    Owns its channel; use it as a context manager or call `close()`. Every call has a finite deadline
    (`timeout`), is retried with jittered exponential backoff when the server answers UNAVAILABLE, and raises
    `ServingError` (with the gRPC status code) on failure.

    Args:
        address: `host:port` of the gRPC endpoint.
        model_name: the model's name on the server.
        timeout: deadline of each call attempt, in seconds.
        version: pin requests to this version (mutually exclusive with `version_label`).
        version_label: pin requests to this label, e.g. `"stable"`.
        signature_name: signature to call.
        max_retries: retries after an UNAVAILABLE answer.
        backoff_s: first backoff; it doubles per retry, and each wait is drawn uniformly below it.
        max_batch_rows: `predict` splits larger inputs into requests of at most this many rows.
        max_message_bytes: gRPC send and receive limit of the channel.
        credentials: TLS channel credentials (`grpc.ssl_channel_credentials(...)`); plaintext when `None`.
        channel: an existing channel to use instead (the client then does not close it).
    """

    def __init__(
        self,
        address: str = "127.0.0.1:8500",
        model_name: str = "deepfm",
        timeout: float = 10.0,
        *,
        version: int | None = None,
        version_label: str | None = None,
        signature_name: str = DEFAULT_SIGNATURE,
        max_retries: int = 3,
        backoff_s: float = 0.1,
        max_batch_rows: int = 8192,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        credentials: grpc.ChannelCredentials | None = None,
        channel: grpc.Channel | None = None,
    ):
        if version is not None and version_label is not None:
            raise ValueError(f"Pass `version` or `version_label`, not both. Received: `{version=}, {version_label=}`")
        if not timeout or timeout <= 0:
            raise ValueError(f"`timeout` must be positive. Received: `timeout={timeout}`")
        if max_batch_rows < 1:
            raise ValueError(f"`max_batch_rows` must be positive. Received: `max_batch_rows={max_batch_rows}`")
        self.address = address
        self.model_name = model_name
        self.timeout = timeout
        self.version = version
        self.version_label = version_label
        self.signature_name = signature_name
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_batch_rows = max_batch_rows
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._owns_channel = channel is None
        if channel is not None:
            self._channel = channel
        elif credentials is not None:
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._predict = self._channel.unary_unary(
            wire.PREDICT_METHOD,
            _pass_bytes,
            wire.PredictResponse.FromString,  # see `encode_predict_request`
        )
        self._get_model_metadata = self._channel.unary_unary(
            wire.GET_MODEL_METADATA_METHOD,
            wire.GetModelMetadataRequest.SerializeToString,
            wire.GetModelMetadataResponse.FromString,
        )
        self._get_model_status = self._channel.unary_unary(
            wire.GET_MODEL_STATUS_METHOD,
            wire.GetModelStatusRequest.SerializeToString,
            wire.GetModelStatusResponse.FromString,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel (unless it was passed in)."""
        if self._owns_channel:
            self._channel.close()

    def predict(self, inputs: Mapping[str, Sequence[Any] | np.ndarray] | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Score rows: the model's probability per row.

        Args:
            inputs: columns or rows of every feature in the spec (see `to_feature_columns`).

        Returns:
            float32 array [rows].

        Raises:
            InputError: inputs do not match the feature spec (nothing was sent).
            ServingError: the server refused or failed the request.
        """
        columns = to_feature_columns(inputs)
        rows = len(columns[fs.FEATURE_NAMES[0]])
        scores = []
        for start in range(0, rows, self.max_batch_rows):
            chunk = {name: values[start : start + self.max_batch_rows] for name, values in columns.items()}
            outputs = self.predict_tensors(chunk, output_filter=[PROBABILITY_OUTPUT])
            if PROBABILITY_OUTPUT not in outputs:
                raise ServingError(f"The response has no `{PROBABILITY_OUTPUT}` output", grpc.StatusCode.INTERNAL)
            probability = outputs[PROBABILITY_OUTPUT]
            expected = len(chunk[fs.FEATURE_NAMES[0]])
            if probability.size != expected:
                raise ServingError(
                    f"`{PROBABILITY_OUTPUT}` has shape {list(probability.shape)} for {expected} rows",
                    grpc.StatusCode.INTERNAL,
                )
            scores.append(probability.reshape(expected).astype(np.float32))
        return np.concatenate(scores)

    def predict_tensors(
        self, inputs: Mapping[str, np.ndarray | Sequence[Any]], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Send tensors as they are, unchecked, and return every output (or those in `output_filter`)."""
        return self.predict_versioned(inputs, output_filter)[0]

    def predict_versioned(
        self, inputs: Mapping[str, np.ndarray | Sequence[Any]], output_filter: Sequence[str] = ()
    ) -> tuple[dict[str, np.ndarray], int]:
        """Like `predict_tensors`, and also return the version that answered (for canaries and checks)."""
        request = encode_predict_request(self._model_spec(), inputs, output_filter)
        response = self._call(self._predict, request, "Predict")
        outputs = {name: decode_tensor(tensor) for name, tensor in response.outputs.items()}
        return outputs, response.model_spec.version.value

    def model_status(self, version: int | None = None) -> list[VersionStatus]:
        """States of the model's versions (or of one version), newest first.

        Raises:
            ServingError: NOT_FOUND when the model (or the version) is unknown.
        """
        request = wire.GetModelStatusRequest()
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = version
        response = self._call(self._get_model_status, request, "GetModelStatus")
        statuses = [
            VersionStatus(
                version=s.version,
                state=wire.MODEL_VERSION_STATE_NAMES.get(s.state, str(s.state)),
                error_code=s.status.error_code,
                error_message=s.status.error_message,
            )
            for s in response.model_version_status
        ]
        return sorted(statuses, key=lambda s: s.version, reverse=True)

    def metadata(self) -> ModelMetadata:
        """Signatures of the model version the client is pinned to (the newest when not pinned)."""
        request = wire.GetModelMetadataRequest(model_spec=self._model_spec(), metadata_field=["signature_def"])
        response = self._call(self._get_model_metadata, request, "GetModelMetadata")
        if "signature_def" not in response.metadata:
            raise ServingError("The metadata response has no signature_def", grpc.StatusCode.INTERNAL)
        signature_map = wire.unpack_signature_def_map(response.metadata["signature_def"])
        return ModelMetadata(
            name=response.model_spec.name,
            version=response.model_spec.version.value,
            signatures={
                key: Signature(
                    method_name=sig.method_name,
                    inputs={n: _tensor_spec(info) for n, info in sig.inputs.items()},
                    outputs={n: _tensor_spec(info) for n, info in sig.outputs.items()},
                )
                for key, sig in signature_map.signature_def.items()
            },
        )

    def check_signature(self) -> None:
        """Check that the served signature takes exactly the spec's features with their serving dtypes.

        Raises:
            ServingError: FAILED_PRECONDITION naming the first feature that disagrees.
        """
        signatures = self.metadata().signatures
        if self.signature_name not in signatures:
            raise ServingError(
                f"Signature `{self.signature_name}` not served; found {sorted(signatures)}",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        inputs = signatures[self.signature_name].inputs
        for feature in fs.FEATURES:
            expected = _SERVING_DTYPE_TO_DATA_TYPE[fs.serving_dtype(feature)]
            if feature.name not in inputs or inputs[feature.name].dtype != expected:
                found = inputs[feature.name].dtype if feature.name in inputs else "missing"
                raise ServingError(
                    f"Feature `{feature.name}`: the signature has {found}, the spec says {expected}",
                    grpc.StatusCode.FAILED_PRECONDITION,
                )
        extra = sorted(set(inputs) - set(fs.FEATURE_NAMES))
        if extra:
            raise ServingError(
                f"The signature takes inputs outside the spec: {extra}", grpc.StatusCode.FAILED_PRECONDITION
            )

    def _model_spec(self):
        spec = wire.ModelSpec(name=self.model_name, signature_name=self.signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.version_label is not None:
            spec.version_label = self.version_label
        return spec

    def _call(self, method: Callable, request, method_name: str):
        for attempt in range(self.max_retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as error:
                code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
                if code is grpc.StatusCode.UNAVAILABLE and attempt < self.max_retries:
                    wait = random.uniform(0, self.backoff_s * 2**attempt)
                    log.warning(
                        "%s on %s: UNAVAILABLE, retry %d in %.2f s", method_name, self.address, attempt + 1, wait
                    )
                    time.sleep(wait)
                    continue
                raise _to_serving_error(error, method_name, self.address) from error
        raise AssertionError("unreachable")


def _to_serving_error(error: grpc.RpcError, method_name: str, address: str) -> ServingError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else "") or ""
    return ServingError(f"{method_name} on {address} failed: {code.name}: {details}", code, details)


def _tensor_spec(info) -> TensorSpec:
    dtype = wire.DATA_TYPE_NAMES.get(info.dtype, f"DataType({info.dtype})")
    if info.tensor_shape.unknown_rank:
        return TensorSpec(dtype, None)
    return TensorSpec(dtype, tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim))
