"""TF Serving's gRPC messages, wire-compatible, built without TensorFlow.

Importing `tensorflow_serving.apis` imports all of TensorFlow (about 20 s). The client only needs a dozen
messages, so this module declares them again, field for field, under its own proto package
(`deepfm_serving.wire`) so that they live in one process beside the official classes without a name clash.
Only the package differs; field numbers, types and enum values are TensorFlow's and TF Serving's, so the bytes
on the wire are the same. `tests/serving/test_wire.py` serializes with each side and parses with the other.

Subsets, on purpose: `TensorProto` keeps the dense value fields (no resource handles, variants), `DataType` keeps
the dtypes the client encodes and decodes (other values survive a parse as plain integers: proto3 enums are
open), `TensorInfo` keeps the dense encoding. Unknown fields are kept by protobuf, so parsing a full message with
these classes loses nothing when it is serialized again.

`GetModelMetadataResponse.metadata["signature_def"]` is an `Any` whose type URL names the official message;
`SIGNATURE_DEF_MAP_TYPE_URL` is that URL, and `unpack_signature_def_map` reads it into the class here.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PACKAGE = "deepfm_serving.wire"
SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# gRPC method paths of TF Serving's services; they name the official packages, not ours.
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_SCALARS = {
    "string": _F.TYPE_STRING,
    "bytes": _F.TYPE_BYTES,
    "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64,
    "uint32": _F.TYPE_UINT32,
    "uint64": _F.TYPE_UINT64,
    "float": _F.TYPE_FLOAT,
    "double": _F.TYPE_DOUBLE,
    "bool": _F.TYPE_BOOL,
}

# DataType values (tensorflow/core/framework/types.proto).
DATA_TYPES = {
    "DT_INVALID": 0, "DT_FLOAT": 1, "DT_DOUBLE": 2, "DT_INT32": 3, "DT_UINT8": 4, "DT_INT16": 5, "DT_INT8": 6,
    "DT_STRING": 7, "DT_INT64": 9, "DT_BOOL": 10, "DT_UINT16": 17, "DT_HALF": 19, "DT_UINT32": 22,
    "DT_UINT64": 23,
}  # fmt: skip

# ModelVersionStatus.State values (tensorflow_serving/apis/get_model_status.proto).
MODEL_VERSION_STATES = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}


def _field(message, name, number, type_, label=_OPTIONAL, oneof_index=None):
    """Add one field; `type_` is a scalar name, `.pkg.Message` or `enum:.pkg.Enum`."""
    field = message.field.add(name=name, number=number, label=label)
    if type_ in _SCALARS:
        field.type = _SCALARS[type_]
    elif type_.startswith("enum:"):
        field.type, field.type_name = _F.TYPE_ENUM, type_[len("enum:") :]
    else:
        field.type, field.type_name = _F.TYPE_MESSAGE, type_
    if oneof_index is not None:
        field.oneof_index = oneof_index


def _map(message, name, number, key_type, value_type):
    """Add a `map<key, value>` field: a repeated nested `...Entry` message flagged as a map entry."""
    entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, key_type)
    _field(entry, "value", 2, value_type)
    _field(message, name, number, f"{_message_type_name(message)}.{entry_name}", _REPEATED)


def _message_type_name(message) -> str:
    return f".{PACKAGE}.{message.name}"


def _enum(container, name, values):
    enum = container.enum_type.add(name=name)
    for value_name, number in values.items():
        enum.value.add(name=value_name, number=number)


def _build_file() -> descriptor_pb2.FileDescriptorProto:
    p = f".{PACKAGE}"
    file = descriptor_pb2.FileDescriptorProto(
        name="deepfm_serving/wire.proto",
        package=PACKAGE,
        syntax="proto3",
        # Importing these modules put their files in the default pool, where ours is added.
        dependency=[any_pb2.DESCRIPTOR.name, wrappers_pb2.DESCRIPTOR.name],
    )
    _enum(file, "DataType", DATA_TYPES)

    shape = file.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    _field(dim, "size", 1, "int64")
    _field(dim, "name", 2, "string")
    _field(shape, "dim", 2, f"{p}.TensorShapeProto.Dim", _REPEATED)
    _field(shape, "unknown_rank", 3, "bool")

    tensor = file.message_type.add(name="TensorProto")
    _field(tensor, "dtype", 1, f"enum:{p}.DataType")
    _field(tensor, "tensor_shape", 2, f"{p}.TensorShapeProto")
    _field(tensor, "version_number", 3, "int32")
    _field(tensor, "tensor_content", 4, "bytes")
    _field(tensor, "half_val", 13, "int32", _REPEATED)
    _field(tensor, "float_val", 5, "float", _REPEATED)
    _field(tensor, "double_val", 6, "double", _REPEATED)
    _field(tensor, "int_val", 7, "int32", _REPEATED)
    _field(tensor, "string_val", 8, "bytes", _REPEATED)
    _field(tensor, "int64_val", 10, "int64", _REPEATED)
    _field(tensor, "bool_val", 11, "bool", _REPEATED)
    _field(tensor, "uint32_val", 16, "uint32", _REPEATED)
    _field(tensor, "uint64_val", 17, "uint64", _REPEATED)

    spec = file.message_type.add(name="ModelSpec")
    spec.oneof_decl.add(name="version_choice")
    _field(spec, "name", 1, "string")
    _field(spec, "version", 2, ".google.protobuf.Int64Value", oneof_index=0)
    _field(spec, "version_label", 4, "string", oneof_index=0)
    _field(spec, "signature_name", 3, "string")

    predict_request = file.message_type.add(name="PredictRequest")
    _field(predict_request, "model_spec", 1, f"{p}.ModelSpec")
    _map(predict_request, "inputs", 2, "string", f"{p}.TensorProto")
    _field(predict_request, "output_filter", 3, "string", _REPEATED)

    predict_response = file.message_type.add(name="PredictResponse")
    _field(predict_response, "model_spec", 2, f"{p}.ModelSpec")
    _map(predict_response, "outputs", 1, "string", f"{p}.TensorProto")

    tensor_info = file.message_type.add(name="TensorInfo")
    tensor_info.oneof_decl.add(name="encoding")
    _field(tensor_info, "name", 1, "string", oneof_index=0)
    _field(tensor_info, "dtype", 2, f"enum:{p}.DataType")
    _field(tensor_info, "tensor_shape", 3, f"{p}.TensorShapeProto")

    signature_def = file.message_type.add(name="SignatureDef")
    _map(signature_def, "inputs", 1, "string", f"{p}.TensorInfo")
    _map(signature_def, "outputs", 2, "string", f"{p}.TensorInfo")
    _field(signature_def, "method_name", 3, "string")

    signature_def_map = file.message_type.add(name="SignatureDefMap")
    _map(signature_def_map, "signature_def", 1, "string", f"{p}.SignatureDef")

    metadata_request = file.message_type.add(name="GetModelMetadataRequest")
    _field(metadata_request, "model_spec", 1, f"{p}.ModelSpec")
    _field(metadata_request, "metadata_field", 2, "string", _REPEATED)

    metadata_response = file.message_type.add(name="GetModelMetadataResponse")
    _field(metadata_response, "model_spec", 1, f"{p}.ModelSpec")
    _map(metadata_response, "metadata", 2, "string", ".google.protobuf.Any")

    status = file.message_type.add(name="StatusProto")
    _field(status, "error_code", 1, "int32")  # tensorflow.error.Code; an enum is an int32 on the wire
    _field(status, "error_message", 2, "string")

    version_status = file.message_type.add(name="ModelVersionStatus")
    _enum(version_status, "State", MODEL_VERSION_STATES)
    _field(version_status, "version", 1, "int64")
    _field(version_status, "state", 2, f"enum:{p}.ModelVersionStatus.State")
    _field(version_status, "status", 3, f"{p}.StatusProto")

    status_request = file.message_type.add(name="GetModelStatusRequest")
    _field(status_request, "model_spec", 1, f"{p}.ModelSpec")

    status_response = file.message_type.add(name="GetModelStatusResponse")
    _field(status_response, "model_version_status", 1, f"{p}.ModelVersionStatus", _REPEATED)
    return file


def _register():
    pool = descriptor_pool.Default()
    file = _build_file()
    try:
        pool.FindFileByName(file.name)
    except KeyError:
        pool.AddSerializedFile(file.SerializeToString())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in (
            "TensorShapeProto",
            "TensorProto",
            "ModelSpec",
            "PredictRequest",
            "PredictResponse",
            "TensorInfo",
            "SignatureDef",
            "SignatureDefMap",
            "GetModelMetadataRequest",
            "GetModelMetadataResponse",
            "StatusProto",
            "ModelVersionStatus",
            "GetModelStatusRequest",
            "GetModelStatusResponse",
        )
    }


_CLASSES = _register()
TensorShapeProto = _CLASSES["TensorShapeProto"]
TensorProto = _CLASSES["TensorProto"]
ModelSpec = _CLASSES["ModelSpec"]
PredictRequest = _CLASSES["PredictRequest"]
PredictResponse = _CLASSES["PredictResponse"]
TensorInfo = _CLASSES["TensorInfo"]
SignatureDef = _CLASSES["SignatureDef"]
SignatureDefMap = _CLASSES["SignatureDefMap"]
GetModelMetadataRequest = _CLASSES["GetModelMetadataRequest"]
GetModelMetadataResponse = _CLASSES["GetModelMetadataResponse"]
StatusProto = _CLASSES["StatusProto"]
ModelVersionStatus = _CLASSES["ModelVersionStatus"]
GetModelStatusRequest = _CLASSES["GetModelStatusRequest"]
GetModelStatusResponse = _CLASSES["GetModelStatusResponse"]

DATA_TYPE_NAMES = {number: name for name, number in DATA_TYPES.items()}
MODEL_VERSION_STATE_NAMES = {number: name for name, number in MODEL_VERSION_STATES.items()}


def unpack_signature_def_map(packed: any_pb2.Any):
    """Read the `signature_def` entry of a metadata response into `SignatureDefMap`.

    `Any.Unpack` checks the type URL against our package name, so the bytes are parsed directly after
    checking that the URL names the official message.

    Raises:
        ValueError: the `Any` holds some other message.
    """
    if packed.type_url.rsplit("/", 1)[-1] != "tensorflow.serving.SignatureDefMap":
        raise ValueError(f"Expected a tensorflow.serving.SignatureDefMap. Received: `type_url={packed.type_url!r}`")
    return SignatureDefMap.FromString(packed.value)


def pack_signature_def_map(signature_def_map) -> any_pb2.Any:
    """Pack a `SignatureDefMap` into an `Any` under the official type URL."""
    return any_pb2.Any(type_url=SIGNATURE_DEF_MAP_TYPE_URL, value=signature_def_map.SerializeToString())
