"""TF Serving's gRPC messages, wire-compatible, built without TensorFlow.

Importing `tensorflow_serving.apis` imports all of TensorFlow (about 20 s). The client only needs a dozen
messages, so this module declares them again, field for field, under its own proto package
(`deepfm_serving.wire`) so that they live in one process beside the official classes without a name clash.
Only the package differs; field numbers, types and enum values are TensorFlow's and TF Serving's, so the bytes
on the wire are the same. `tests/serving/test_serving_wire.py` serializes with each side and parses with the other.

Subsets, on purpose: `TensorProto` keeps the dense value fields (no resource handles, variants), `DataType` keeps
the dtypes the client encodes and decodes (other values survive a parse as plain integers: proto3 enums are
open), `TensorInfo` keeps the dense encoding. Unknown fields are kept by protobuf, so parsing a full message with
these classes loses nothing when it is serialized again.

`GetModelMetadataResponse.metadata["signature_def"]` is an `Any` whose type URL names the official message
(`tensorflow.serving.SignatureDefMap`); `unpack_signature_def_map` reads it into the class here.
"""

from __future__ import annotations

from google.protobuf import any_pb2, descriptor_pool, message_factory, wrappers_pb2

PACKAGE = "deepfm_serving.wire"
FILE_NAME = "deepfm_serving/wire.proto"

# gRPC method paths of TF Serving's services; they name the official packages, not ours.
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS_METHOD = "/tensorflow.serving.ModelService/GetModelStatus"

# FieldDescriptorProto's Label and Type values (google/protobuf/descriptor.proto), so that importing this module
# needs no `descriptor_pb2` (see `_FILE_DESCRIPTOR`).
_OPTIONAL, _REPEATED = 1, 3
_TYPE_MESSAGE, _TYPE_ENUM = 11, 14
_SCALARS = {
    "double": 1, "float": 2, "int64": 3, "uint64": 4, "int32": 5, "bool": 8, "string": 9, "bytes": 12, "uint32": 13,
}  # fmt: skip

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
        field.type, field.type_name = _TYPE_ENUM, type_[len("enum:") :]
    else:
        field.type, field.type_name = _TYPE_MESSAGE, type_
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


def _build_file():
    """The FileDescriptorProto of the messages here: the source of `_FILE_DESCRIPTOR`."""
    from google.protobuf import descriptor_pb2

    p = f".{PACKAGE}"
    file = descriptor_pb2.FileDescriptorProto(
        name=FILE_NAME,
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

    # TensorProto's `string_val` typed as text: the same bytes on the wire for UTF-8 strings, and the encoder
    # takes `str` items as they are (one C call for the column instead of an encode per item in Python).
    string_values = file.message_type.add(name="TensorStringValues")
    _field(string_values, "string_val", 8, "string", _REPEATED)

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
    try:
        pool.FindFileByName(FILE_NAME)
    except KeyError:
        pool.AddSerializedFile(_FILE_DESCRIPTOR)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in (
            "TensorShapeProto",
            "TensorProto",
            "TensorStringValues",
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


def format_file_descriptor() -> str:
    """`_build_file()`, serialized, as the Python source of `_FILE_DESCRIPTOR`."""
    encoded = _build_file().SerializeToString(deterministic=True)
    chunks = [repr(encoded[i : i + 64]) for i in range(0, len(encoded), 64)]
    return "_FILE_DESCRIPTOR = (\n" + "".join(f"    {chunk}\n" for chunk in chunks) + ")\n"


# `_build_file()` serialized, as protoc's generated modules carry their file: building it at import would import
# `descriptor_pb2`, about a tenth of the client's import time. After editing `_build_file`, paste the output of
# `python -m serving.wire` here; tests/serving/test_serving_wire.py checks that the two agree.
_FILE_DESCRIPTOR = (
    b"\n\x19deepfm_serving/wire.proto\x12\x13deepfm_serving.wire\x1a\x19google/protobu"
    b'f/any.proto\x1a\x1egoogle/protobuf/wrappers.proto"\x83\x01\n\x10TensorShapeProto'
    b"\x126\n\x03dim\x18\x02 \x03(\x0b2).deepfm_serving.wire.TensorShapeProto.Dim\x12\x14\n\x0cunkn"
    b'own_rank\x18\x03 \x01(\x08\x1a!\n\x03Dim\x12\x0c\n\x04size\x18\x01 \x01(\x03\x12\x0c\n\x04name\x18\x02 \x01(\t"\xd3\x02\n\x0bTensorProt'
    b"o\x12,\n\x05dtype\x18\x01 \x01(\x0e2\x1d.deepfm_serving.wire.DataType\x12;\n\x0ctensor_shape\x18"
    b"\x02 \x01(\x0b2%.deepfm_serving.wire.TensorShapeProto\x12\x16\n\x0eversion_number\x18\x03"
    b" \x01(\x05\x12\x16\n\x0etensor_content\x18\x04 \x01(\x0c\x12\x10\n\x08half_val\x18\r \x03(\x05\x12\x11\n\tfloat_val\x18\x05 \x03("
    b"\x02\x12\x12\n\ndouble_val\x18\x06 \x03(\x01\x12\x0f\n\x07int_val\x18\x07 \x03(\x05\x12\x12\n\nstring_val\x18\x08 \x03(\x0c\x12\x11\n\tin"
    b"t64_val\x18\n \x03(\x03\x12\x10\n\x08bool_val\x18\x0b \x03(\x08\x12\x12\n\nuint32_val\x18\x10 \x03(\r\x12\x12\n\nuint64_va"
    b'l\x18\x11 \x03(\x04"(\n\x12TensorStringValues\x12\x12\n\nstring_val\x18\x08 \x03(\t"\x8c\x01\n\tModelSpec\x12'
    b"\x0c\n\x04name\x18\x01 \x01(\t\x12.\n\x07version\x18\x02 \x01(\x0b2\x1b.google.protobuf.Int64ValueH\x00\x12\x17\n"
    b"\rversion_label\x18\x04 \x01(\tH\x00\x12\x16\n\x0esignature_name\x18\x03 \x01(\tB\x10\n\x0eversion_choice"
    b'"\xed\x01\n\x0ePredictRequest\x122\n\nmodel_spec\x18\x01 \x01(\x0b2\x1e.deepfm_serving.wire.Mo'
    b"delSpec\x12?\n\x06inputs\x18\x02 \x03(\x0b2/.deepfm_serving.wire.PredictRequest.Inp"
    b"utsEntry\x12\x15\n\routput_filter\x18\x03 \x03(\t\x1aO\n\x0bInputsEntry\x12\x0b\n\x03key\x18\x01 \x01(\t\x12/\n\x05v"
    b'alue\x18\x02 \x01(\x0b2 .deepfm_serving.wire.TensorProto:\x028\x01"\xdb\x01\n\x0fPredictResp'
    b"onse\x122\n\nmodel_spec\x18\x02 \x01(\x0b2\x1e.deepfm_serving.wire.ModelSpec\x12B\n\x07outp"
    b"uts\x18\x01 \x03(\x0b21.deepfm_serving.wire.PredictResponse.OutputsEntry\x1aP\n\x0c"
    b"OutputsEntry\x12\x0b\n\x03key\x18\x01 \x01(\t\x12/\n\x05value\x18\x02 \x01(\x0b2 .deepfm_serving.wire.T"
    b'ensorProto:\x028\x01"\x93\x01\n\nTensorInfo\x12\x0e\n\x04name\x18\x01 \x01(\tH\x00\x12,\n\x05dtype\x18\x02 \x01(\x0e2\x1d.d'
    b"eepfm_serving.wire.DataType\x12;\n\x0ctensor_shape\x18\x03 \x01(\x0b2%.deepfm_servi"
    b'ng.wire.TensorShapeProtoB\n\n\x08encoding"\xc4\x02\n\x0cSignatureDef\x12=\n\x06inputs\x18'
    b"\x01 \x03(\x0b2-.deepfm_serving.wire.SignatureDef.InputsEntry\x12?\n\x07outputs\x18"
    b"\x02 \x03(\x0b2..deepfm_serving.wire.SignatureDef.OutputsEntry\x12\x13\n\x0bmethod_"
    b"name\x18\x03 \x01(\t\x1aN\n\x0bInputsEntry\x12\x0b\n\x03key\x18\x01 \x01(\t\x12.\n\x05value\x18\x02 \x01(\x0b2\x1f.deepfm_s"
    b"erving.wire.TensorInfo:\x028\x01\x1aO\n\x0cOutputsEntry\x12\x0b\n\x03key\x18\x01 \x01(\t\x12.\n\x05value"
    b'\x18\x02 \x01(\x0b2\x1f.deepfm_serving.wire.TensorInfo:\x028\x01"\xb8\x01\n\x0fSignatureDefMap\x12'
    b"M\n\rsignature_def\x18\x01 \x03(\x0b26.deepfm_serving.wire.SignatureDefMap.Sig"
    b"natureDefEntry\x1aV\n\x11SignatureDefEntry\x12\x0b\n\x03key\x18\x01 \x01(\t\x120\n\x05value\x18\x02 \x01(\x0b2"
    b'!.deepfm_serving.wire.SignatureDef:\x028\x01"e\n\x17GetModelMetadataReques'
    b"t\x122\n\nmodel_spec\x18\x01 \x01(\x0b2\x1e.deepfm_serving.wire.ModelSpec\x12\x16\n\x0emetadat"
    b'a_field\x18\x02 \x03(\t"\xe4\x01\n\x18GetModelMetadataResponse\x122\n\nmodel_spec\x18\x01 \x01(\x0b2\x1e'
    b".deepfm_serving.wire.ModelSpec\x12M\n\x08metadata\x18\x02 \x03(\x0b2;.deepfm_servin"
    b"g.wire.GetModelMetadataResponse.MetadataEntry\x1aE\n\rMetadataEntry\x12\x0b"
    b'\n\x03key\x18\x01 \x01(\t\x12#\n\x05value\x18\x02 \x01(\x0b2\x14.google.protobuf.Any:\x028\x01"8\n\x0bStatusPr'
    b'oto\x12\x12\n\nerror_code\x18\x01 \x01(\x05\x12\x15\n\rerror_message\x18\x02 \x01(\t"\xea\x01\n\x12ModelVersionS'
    b"tatus\x12\x0f\n\x07version\x18\x01 \x01(\x03\x12<\n\x05state\x18\x02 \x01(\x0e2-.deepfm_serving.wire.Mode"
    b"lVersionStatus.State\x120\n\x06status\x18\x03 \x01(\x0b2 .deepfm_serving.wire.Statu"
    b'sProto"S\n\x05State\x12\x0b\n\x07UNKNOWN\x10\x00\x12\t\n\x05START\x10\n\x12\x0b\n\x07LOADING\x10\x14\x12\r\n\tAVAILABL'
    b'E\x10\x1e\x12\r\n\tUNLOADING\x10(\x12\x07\n\x03END\x102"K\n\x15GetModelStatusRequest\x122\n\nmodel_sp'
    b'ec\x18\x01 \x01(\x0b2\x1e.deepfm_serving.wire.ModelSpec"_\n\x16GetModelStatusRespon'
    b"se\x12E\n\x14model_version_status\x18\x01 \x03(\x0b2'.deepfm_serving.wire.ModelVers"
    b"ionStatus*\xd2\x01\n\x08DataType\x12\x0e\n\nDT_INVALID\x10\x00\x12\x0c\n\x08DT_FLOAT\x10\x01\x12\r\n\tDT_DOUBL"
    b"E\x10\x02\x12\x0c\n\x08DT_INT32\x10\x03\x12\x0c\n\x08DT_UINT8\x10\x04\x12\x0c\n\x08DT_INT16\x10\x05\x12\x0b\n\x07DT_INT8\x10\x06\x12\r\n\tDT"
    b"_STRING\x10\x07\x12\x0c\n\x08DT_INT64\x10\t\x12\x0b\n\x07DT_BOOL\x10\n\x12\r\n\tDT_UINT16\x10\x11\x12\x0b\n\x07DT_HALF\x10\x13"
    b"\x12\r\n\tDT_UINT32\x10\x16\x12\r\n\tDT_UINT64\x10\x17b\x06proto3"
)
_CLASSES = _register()
TensorShapeProto = _CLASSES["TensorShapeProto"]
TensorProto = _CLASSES["TensorProto"]
TensorStringValues = _CLASSES["TensorStringValues"]
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


if __name__ == "__main__":
    print(format_file_descriptor(), end="")
