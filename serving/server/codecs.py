"""A PredictRequest checked against a signature and run: TF Serving's request checks and status codes, and the
codecs between the requests' TensorProtos and TensorFlow tensors.
"""

from __future__ import annotations

import math

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from deepfm_model.spec.serving import SIGNATURE_KEY
from serving.server.signatures import LoadedVersion

DEFAULT_SIGNATURE = SIGNATURE_KEY


class RequestError(Exception):
    """A request refused with a gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def run_predict(model: LoadedVersion, model_name: str, request: predict_pb2.PredictRequest, max_batch_rows: int = 0):
    """Run a PredictRequest on a loaded version, with TF Serving's input checks.

    Raises:
        RequestError: FAILED_PRECONDITION for an unknown signature, INVALID_ARGUMENT for bad inputs or filters.
    """
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    signature = model.signatures.get(signature_name)
    if signature is None:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
    specs = signature.inputs
    inputs = request.inputs
    if len(inputs) != len(specs) or any(name not in inputs for name in specs):
        sent, expected = set(inputs), set(specs)
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input size does not match signature: {len(sent)}!={len(expected)}. "
            f"Sent extra: {sorted(sent - expected)}. Missing but required: {sorted(expected - sent)}.",
        )
    # Shapes and dtypes are checked from the protos before any tensor is decoded.
    protos = {name: inputs[name] for name in specs}
    shapes: dict[str, list[int]] = {}
    for name, spec in specs.items():
        proto = protos[name]
        if proto.dtype != spec.dtype.as_datatype_enum:
            sent_dtype = tf.dtypes.as_dtype(proto.dtype).name if proto.dtype else "DT_INVALID"
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Expects arg[{name}] to be {spec.dtype.name} but {sent_dtype} is provided",
            )
        shape = shapes[name] = [dim.size for dim in proto.tensor_shape.dim]
        if proto.tensor_shape.unknown_rank or not spec.accepts(shape) or any(size < 0 for size in shape):
            raise RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Input `{name}` has shape {shape}; the signature takes {tf.TensorShape(spec.dims)}",
            )
    rows = {name: shape[0] for name, shape in shapes.items() if shape}
    if len(set(rows.values())) > 1:
        counts = ", ".join(f"{name}: {count}" for name, count in sorted(rows.items()))
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Inputs have different numbers of rows ({counts})")
    batch_rows = next(iter(rows.values()), None)
    if batch_rows == 0:
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Empty batch: the inputs have 0 rows")
    if max_batch_rows and batch_rows is not None and batch_rows > max_batch_rows:
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Batch of {batch_rows} rows exceeds the limit of {max_batch_rows}"
        )
    for name in request.output_filter:
        if name not in signature.output_names:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"output tensor alias not found in signature: {name}")
    tensors = {name: _decode_input(name, protos[name], shapes[name], spec.dtype) for name, spec in specs.items()}
    try:
        outputs = signature(tensors)
    except tf.errors.OpError as error:
        raise RequestError(grpc_code(error.error_code), error.message) from error
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model_name
    response.model_spec.version.value = model.version
    response.model_spec.signature_name = signature_name
    for name in request.output_filter or signature.output_names:
        _encode_output(outputs[name], response.outputs[name])
    return response


def _decode_input(name: str, proto, shape: list[int], dtype: tf.DType) -> tf.Tensor:
    """A request's TensorProto as a tensor of `dtype` (already checked against the proto's dtype and shape).

    Fast paths for what clients send, packed numbers (`tensor_content`) and one string per element, that make
    the tensor straight from numpy or a list (no TensorFlow op runs); every other encoding (`*_val` fields, one
    value broadcast to the shape) goes through `tf.make_ndarray`.

    Raises:
        RequestError: INVALID_ARGUMENT when the values do not fill the shape.
    """
    size = math.prod(shape)
    if dtype == tf.string:
        if len(proto.string_val) == size and not proto.tensor_content:
            values = list(proto.string_val)
            if len(shape) == 1:
                return tf.constant(values, dtype=tf.string)
            return tf.constant(np.array(values, dtype=object).reshape(shape), dtype=tf.string)
    elif dtype.is_numpy_compatible:
        content = proto.tensor_content
        if content and len(content) == size * dtype.size:
            return tf.constant(np.frombuffer(content, dtype=dtype.as_numpy_dtype).reshape(shape))
    try:
        array = tf.make_ndarray(proto)
    except Exception as error:  # (tensor_content of the wrong length and the like)
        raise RequestError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Input `{name}` is not a valid tensor: {error}"
        ) from error
    return tf.convert_to_tensor(array, dtype=dtype)


def _encode_output(tensor: tf.Tensor, out) -> None:
    """Fill the response TensorProto `out`: packed bytes for numbers (as `tf.make_tensor_proto` writes them,
    without its per-call checks), `tf.make_tensor_proto` for everything else."""
    array = tensor.numpy()
    if tensor.dtype == tf.string or not tensor.dtype.is_numpy_compatible:
        out.CopyFrom(tf.make_tensor_proto(array))
        return
    out.dtype = tensor.dtype.as_datatype_enum
    for size in array.shape:
        out.tensor_shape.dim.add(size=size)
    out.tensor_content = array.tobytes()


def grpc_code(tf_code: int) -> grpc.StatusCode:
    """TensorFlow's error codes are gRPC's, number for number."""
    for code in grpc.StatusCode:
        if code.value[0] == tf_code:
            return code
    return grpc.StatusCode.UNKNOWN
