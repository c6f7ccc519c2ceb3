"""A TF Serving-compatible local gRPC server over TensorFlow's SavedModel runtime.

No registry this project can reach ships `tensorflow_model_server`, so laptops and CI serve with this instead
(DESIGN.md, "TF Serving locally"). It speaks TF Serving's gRPC API with the official protos and follows its
documented behaviour for one model:

- Watches `<base_path>/<model_name>/` every `poll_interval_s`; integer-named folders are versions.
- Version policy: latest N (the newest `num_versions` versions on disk are loaded; the default) or specific
  (exactly the versions listed, as TF Serving's `specific { versions: ... }`).
- With `model_config_file`, the file is read again on every poll, as TF Serving's
  `--model_config_file_poll_wait_seconds` does: a changed version policy or label map takes effect without a
  restart. New labels are applied only when every version they name is AVAILABLE once the pass is done (TF
  Serving refuses to label a version that is not); the new versions, the labels and the unloads take effect in
  one step, so a request pinned to a label never finds its version gone; a refused label map is logged and the
  old one kept.
- Load before unload: a new version is loaded and warmed up before older ones are dropped; a request that
  already holds a version finishes on it, so no request fails during a switch.
- A version that fails to load (or to warm up) is reported END with its error and never retried; the versions
  already serving stay AVAILABLE.
- Warm-up: records of `assets.extra/tf_serving_warmup_requests` (a TFRecord of `PredictionLog`, at most
  1000) are replayed before the version becomes AVAILABLE.
- Version labels from the configuration (`{"stable": 3}`).
- Status codes: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an unknown label, a missing or
  extra input, a wrong dtype or shape (the message names the input), a ragged or empty batch, too many rows
  (`max_batch_rows`), too many bytes (`max_request_bytes`) and an unknown `output_filter` entry,
  FAILED_PRECONDITION for an unknown signature; a message over the gRPC limit (`max_message_bytes`) is refused
  by gRPC itself with RESOURCE_EXHAUSTED.
- grpc.health.v1 health: SERVING while some version is available.
- ModelService.HandleReloadConfigRequest takes a ModelServerConfig naming this server's model: its base path,
  version policy and labels take effect as on a poll (a new base path is loaded before the old one is let
  go; a version not on disk yet is awaited, the versions in force serving meanwhile; labels that would not
  name an AVAILABLE version refuse the reload with FAILED_PRECONDITION and change nothing; see
  `ModelManager.reload_config`); the outcome is the response's StatusProto. Other model names are UNIMPLEMENTED (one model per server),
  and a server following `model_config_file` refuses with FAILED_PRECONDITION.

    python -m serving.server --base-path models --model-name deepfm --port 8500
    python -m serving.server --model-config-file models/models.config   # policy and labels from the file
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import grpc
import numpy as np
import tensorflow as tf
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from serving.labels import VersionConfig, parse_model_config
from serving.push import list_versions

log = logging.getLogger(__name__)

DEFAULT_SIGNATURE = "serving_default"
WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit
_STATE = get_model_status_pb2.ModelVersionStatus.State
_HEALTH_SERVICES = ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService")


@dataclass(frozen=True)
class ServerConfig:
    """How the server runs; `from_model_config_file` reads TF Serving's `--model_config_file` instead."""

    base_path: str  # folder holding `<model_name>/<version>/`
    model_name: str = "deepfm"  # the name clients put in `ModelSpec.name`
    host: str = "127.0.0.1"  # interface to bind; "0.0.0.0" for all
    port: int = 8500  # gRPC port; 0 picks a free one (see `ModelServer.port`)
    poll_interval_s: float = 1.0  # how often the model folder is scanned for versions
    num_versions: int = 1  # latest-N policy: newest versions kept loaded
    specific_versions: tuple[int, ...] = ()  # specific policy: exactly these versions loaded; () for latest-N
    version_labels: dict[str, int] = field(default_factory=dict)  # label -> version
    model_config_file: str | None = None  # re-read on every poll for the policy and labels (overrides both)
    max_workers: int = 8  # gRPC handler threads
    max_message_bytes: int = 64 * 1024 * 1024  # gRPC send and receive limit
    max_batch_rows: int = 0  # refuse requests with more rows (INVALID_ARGUMENT); 0 for no limit
    max_request_bytes: int = 0  # refuse larger Predict requests (INVALID_ARGUMENT); 0 for gRPC's limit only
    grace_s: float = 5.0  # how long `stop()` lets in-flight requests finish
    metrics_port: int | None = None  # Prometheus metrics over HTTP on this port; None for none

    @classmethod
    def from_model_config_file(cls, path: str | Path, **overrides: Any) -> ServerConfig:
        """Read the first model of a TF Serving `--model_config_file` (as `serving.push.write_model_config`
        writes it): name, base path (the parent of the model folder), version policy and labels. The server
        keeps reading the file on every poll (`model_config_file`)."""
        _, model = parse_model_config(Path(path).read_text(), None, str(path))
        policy = VersionConfig.from_proto(model, str(path))
        base = Path(model.base_path)
        if base.name != model.name:
            raise ValueError(f"This server expects base_path to end in the model name. Received: `{model.base_path}`")
        values: dict[str, Any] = {
            "base_path": str(base.parent),
            "model_name": model.name,
            "num_versions": policy.num_versions,
            "specific_versions": policy.specific_versions,
            "version_labels": policy.labels,
            "model_config_file": str(path),
        }
        values.update(overrides)
        return cls(**values)


class RequestError(Exception):
    """A request refused with a gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class InputSpec:
    """One input of a signature, in the forms the request checks compare against."""

    dtype: tf.DType
    dims: tuple[int | None, ...] | None  # None: unknown rank; None in a dim: any size

    def accepts(self, shape: list[int]) -> bool:
        if self.dims is None:
            return True
        return len(shape) == len(self.dims) and all(d is None or d == s for d, s in zip(self.dims, shape, strict=True))


class ServingSignature:
    """A signature of a loaded version: its input specs and output names, and a cheap way to call it.

    The inputs are named as the SignatureDef names them (what GetModelMetadata advertises and clients send),
    which need not be Python identifiers (`user-id`, `a.b`): `structured_input_signature` holds sanitized
    names (`user_id`, `a_b`) instead. `ConcreteFunction.__call__` binds keyword arguments against that structured
    signature on every call, which costs more than running this model (about 1 ms against 0.2 ms here). The
    flat calling convention it ends in takes the inputs in `_arg_keywords` order, and `_arg_keywords` are the
    SignatureDef names; that convention is used directly when the function exposes it, which the signatures of
    a loaded SavedModel do; otherwise the public call is used (with the structured names).
    """

    def __init__(self, function, signature_def=None):
        self.function = function
        order = getattr(function, "_arg_keywords", None)
        def_inputs = dict(signature_def.inputs) if signature_def is not None else {}
        self._flat = (hasattr(function, "_call_flat") and order is not None and bool(def_inputs)
                      and sorted(order) == sorted(def_inputs))  # fmt: skip
        if self._flat:
            self.inputs = {name: _input_spec(def_inputs[name]) for name in order}
        else:
            specs: dict[str, tf.TensorSpec] = function.structured_input_signature[1]
            self.inputs = {
                name: InputSpec(spec.dtype, None if spec.shape.rank is None else tuple(spec.shape.as_list()))
                for name, spec in specs.items()
            }
        self.output_names = tuple(function.structured_outputs)

    def __call__(self, tensors: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if self._flat:
            return self.function._call_flat([tensors[name] for name in self.inputs], self.function.captured_inputs)
        return self.function(**tensors)


def _input_spec(tensor_info) -> InputSpec:
    """The InputSpec of a SignatureDef's TensorInfo."""
    shape = tensor_info.tensor_shape
    dims = None if shape.unknown_rank else tuple(None if dim.size < 0 else dim.size for dim in shape.dim)
    return InputSpec(tf.dtypes.as_dtype(tensor_info.dtype), dims)


@dataclass
class LoadedVersion:
    """One loaded version: its callable signatures and their SignatureDefs."""

    version: int
    path: Path
    signatures: dict[str, ServingSignature]  # signature key -> signature
    signature_def_map: get_model_metadata_pb2.SignatureDefMap
    module: Any  # the loaded SavedModel; keeps the functions' variables alive
    warmup_requests: int = 0  # warm-up requests replayed before it became AVAILABLE


def load_version(path: Path, version: int) -> LoadedVersion:
    """Load a SavedModel version folder (tag `serve`)."""
    module = tf.saved_model.load(str(path), tags=["serve"])
    saved_model = loader_impl.parse_saved_model(str(path))
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            for key, signature_def in meta_graph.signature_def.items():
                signature_def_map.signature_def[key].CopyFrom(signature_def)
    signatures = {
        key: ServingSignature(function, signature_def_map.signature_def.get(key))
        for key, function in module.signatures.items()
    }
    return LoadedVersion(version, path, signatures, signature_def_map, module)


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
        raise RequestError(_grpc_code(error.error_code), error.message) from error
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


def _grpc_code(tf_code: int) -> grpc.StatusCode:
    """TensorFlow's error codes are gRPC's, number for number."""
    for code in grpc.StatusCode:
        if code.value[0] == tf_code:
            return code
    return grpc.StatusCode.UNKNOWN


def run_warmup(model: LoadedVersion, model_name: str) -> int:
    """Replay the version's warm-up PredictRequests; returns how many ran.

    Raises:
        ValueError: too many records, or a record that is not a PredictLog.
        RequestError: a warm-up request fails.
    """
    warmup_path = model.path / WARMUP_FILE
    if not warmup_path.is_file():
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(warmup_path)):
        count += 1
        if count > MAX_WARMUP_RECORDS:
            raise ValueError(f"More than {MAX_WARMUP_RECORDS} warm-up records in {warmup_path}")
        prediction_log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if prediction_log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"Unsupported warm-up log type {prediction_log.WhichOneof('log_type')} in {warmup_path}")
        run_predict(model, model_name, prediction_log.predict_log.request)
    return count


@dataclass(frozen=True)
class _Serving:
    """What requests resolve against, replaced as a whole so that a label and its version are read together."""

    available: dict[int, LoadedVersion]  # version -> loaded version
    labels: dict[str, int]  # label -> version


def _policy_text(num_versions: int, specific_versions: tuple[int, ...]) -> str:
    return f"specific {list(specific_versions)}" if specific_versions else f"latest {num_versions}"


class ModelManager:
    """The versions of one model: loads, warms up, serves and unloads them as the folder (and config) change."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.model_dir = Path(config.base_path) / config.model_name
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()  # one poll or reload at a time
        self._num_versions = config.num_versions
        self._specific_versions = tuple(config.specific_versions)
        # With a config file, labels come from it (checked against the available versions) on the first poll.
        labels = {} if config.model_config_file else dict(config.version_labels)
        self._serving = _Serving({}, labels)  # replaced, never mutated: readers take a snapshot
        self._states: dict[int, tuple[int, int, str]] = {}  # version -> (state, error code, message)
        self._failed: set[tuple[Path, int]] = set()  # (resolved model folder, version) that failed to load
        self._config_text: str | None = None  # the config file as last read
        self._refused_labels: str | None = None  # the last refusal logged, so that it is logged once
        self.on_change = lambda available: None  # called with the available versions after each change

    @property
    def _available(self) -> dict[int, LoadedVersion]:
        return self._serving.available

    @property
    def version_labels(self) -> dict[str, int]:
        """The labels in force."""
        return dict(self._serving.labels)

    def available_versions(self) -> list[int]:
        return sorted(self._available)

    def poll(self) -> None:
        """One pass: re-read the config file, load new aspired versions, apply labels, unload the rest."""
        with self._poll_lock:
            self._poll(self._read_config_file())

    def reload_config(self, model) -> tuple[grpc.StatusCode, str]:
        """ModelService.HandleReloadConfigRequest for this server's model: take the version policy, labels and
        base path of `model` (a `tensorflow.serving.ModelConfig`) and load, label and unload accordingly.

        It runs the same pass as a poll (`_transition`): the versions the policy aspires to in the (new) folder
        are loaded and warmed up first, then served in place of the others in one step, so requests keep being
        answered by the versions in force until the new ones are AVAILABLE.

        - A version the policy names that is not on disk (or a new base path with no versions yet) is awaited,
          as TF Serving does: the config is accepted (OK), the versions in force keep serving, and the version
          is loaded by the poll once it appears. This holds on the same base path and on a new one.
        - Labels must name versions that will be AVAILABLE once the reload is done, i.e. versions the new
          policy keeps and that load: otherwise the reload is refused with FAILED_PRECONDITION naming the label
          and version, and nothing changes (base path, policy and labels in force stay; versions loaded for it
          are let go).
        - A new base path whose versions all fail to load is refused too (the error of the load), keeping the
          base path in force.

        Returns:
            The status code and message of the outcome (OK and "" when everything took effect).
        """
        if self.config.model_config_file is not None:
            return (grpc.StatusCode.FAILED_PRECONDITION,
                    f"This server follows the model config file {self.config.model_config_file}; edit it instead")  # fmt: skip
        try:
            policy = VersionConfig.from_proto(model, "ReloadConfigRequest")
        except ValueError as error:
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        model_dir = Path(model.base_path) if model.base_path else self.model_dir
        with self._poll_lock:
            self._refused_labels = None
            code, message = self._transition(model_dir, policy.num_versions, policy.specific_versions,
                                             policy.labels, strict=True)  # fmt: skip
        if code is grpc.StatusCode.OK:
            log.info("Reloaded the config of %s: %s, %s, labels %s", self.config.model_name, model_dir,
                     _policy_text(policy.num_versions, policy.specific_versions), policy.labels)  # fmt: skip
        else:
            log.error("Refused a config reload of %s: %s", self.config.model_name, message)
        return code, message

    def _poll(self, wanted_labels: dict[str, int] | None) -> None:
        self._transition(self.model_dir, self._num_versions, self._specific_versions, wanted_labels, strict=False)

    def _aspired(self, model_dir: Path, num_versions: int, specific: tuple[int, ...]) -> tuple[list[int], list[int]]:
        """The versions on disk in `model_dir` and those the version policy aspires to load, oldest first."""
        on_disk = list_versions(model_dir.parent, model_dir.name)
        if specific:
            return on_disk, [v for v in on_disk if v in specific]
        return on_disk, on_disk[-num_versions:]

    def _transition(self, model_dir: Path, num_versions: int, specific: tuple[int, ...],
                    wanted_labels: dict[str, int] | None, strict: bool) -> tuple[grpc.StatusCode, str]:  # fmt: skip
        """One pass of the poll or of a reload: load what the policy aspires to in `model_dir`, then serve it,
        with the labels, in place of the rest in one step (load before unload).

        Versions loaded from another folder (the base path before a reload) keep serving until a version of
        `model_dir` is ready. `wanted_labels` None keeps the labels in force. With `strict` (a reload) labels that
        would not name an AVAILABLE version refuse the whole pass and nothing changes; otherwise (a poll) such
        labels are refused and logged, and the policy still takes effect. Returns the outcome.
        """
        here = model_dir.resolve()
        serving = self._serving
        on_disk, aspired = self._aspired(model_dir, num_versions, specific)
        labels = serving.labels if wanted_labels is None else wanted_labels
        if strict:
            not_aspired = {label: v for label, v in labels.items() if v not in aspired}
            if not_aspired:
                return grpc.StatusCode.FAILED_PRECONDITION, self._label_refusal(labels, not_aspired, serving.labels)
        own = {v: m for v, m in serving.available.items() if m.path.parent.resolve() == here}
        loaded: dict[int, LoadedVersion] = {}
        errors: list[str] = []
        for version in aspired:
            if version in own:
                continue
            if (here, version) in self._failed:  # not tried again; a reload still counts it as an error
                if strict:
                    errors.append(f"version {version} of {model_dir} failed to load before (see the server log)")
                continue
            model = self._load(model_dir, version)
            if model is None:
                errors.append(self._states[version][2])
            else:
                loaded[version] = model
        candidates = {**own, **loaded}
        if specific:
            keep = [v for v in sorted(candidates) if v in aspired]
        else:
            keep = [v for v in sorted(candidates) if v in on_disk][-num_versions:]
        if not keep and own:  # nothing the policy wants is loadable yet: the versions in force keep serving
            if not on_disk:
                log.warning("No versions of %s on disk; keeping %s loaded", self.config.model_name, sorted(own))
            keep = sorted(own)
        # Nothing of `model_dir` to serve yet (a new base path, awaited versions): the versions in force stay.
        available = {v: candidates[v] for v in keep} if keep else dict(serving.available)
        unavailable = {label: v for label, v in labels.items() if v not in available}
        refusal = None
        if strict and unavailable:
            refusal = self._label_refusal(labels, unavailable, serving.labels)
        elif strict and not keep and errors and here != self.model_dir.resolve():
            refusal = f"Could not load {model_dir}; keeping {self.model_dir}: {'; '.join(errors)}"
        if refusal is not None:
            for version in loaded:  # let go of what was loaded for the refused reload
                if version not in serving.available:
                    self._set_state(version, _STATE.END, 0, "Unloaded: the config reload was refused")
            self._restore_states(serving)
            code = grpc.StatusCode.UNKNOWN if not unavailable else grpc.StatusCode.FAILED_PRECONDITION
            return code, refusal
        if unavailable:  # a poll: the policy takes effect, the labels in force stay
            if labels != serving.labels:
                message = self._label_refusal(labels, unavailable, serving.labels)
            else:  # (a version removed from disk, or a policy change by the config file)
                message = f"Version labels of {self.config.model_name} name versions no longer served: {unavailable}"
            if message != self._refused_labels:
                log.error(message)
                self._refused_labels = message
            labels = serving.labels
        self._commit(_Serving(available, dict(labels)))
        self._restore_states(self._serving)
        self.model_dir = model_dir
        self._num_versions, self._specific_versions = num_versions, tuple(specific)
        return grpc.StatusCode.OK, ""

    def _restore_states(self, serving: _Serving) -> None:
        """Report the served versions AVAILABLE (a version of another folder with the same number may have been
        reported LOADING or END meanwhile)."""
        for version in serving.available:
            if self._states.get(version, (None,))[0] != _STATE.AVAILABLE:
                self._set_state(version, _STATE.AVAILABLE)

    def _label_refusal(self, labels: dict[str, int], bad: dict[str, int], in_force: dict[str, int]) -> str:
        names = ", ".join(f"{label} -> version {version}" for label, version in sorted(bad.items()))
        return (f"Refusing version labels {labels} of {self.config.model_name}: {names} would not be AVAILABLE; "
                f"keeping {in_force}")  # fmt: skip

    def _commit(self, new: _Serving) -> None:
        """Serve `new` in place of what is served, in one step; report the versions that ended or started."""
        old = self._serving
        same_versions = new.available.keys() == old.available.keys() and all(
            new.available[v] is old.available[v] for v in new.available
        )
        if same_versions and new.labels == old.labels:
            return
        with self._lock:
            self._serving = new
        for version, model in sorted(old.available.items()):
            if new.available.get(version) is not model:
                self._set_state(version, _STATE.END)
                log.info("Unloaded %s version %d from %s", self.config.model_name, version, model.path.parent)
        for version, model in sorted(new.available.items()):
            if old.available.get(version) is not model:
                self._set_state(version, _STATE.AVAILABLE)
                log.info("%s version %d AVAILABLE (%d warm-up requests) from %s", self.config.model_name, version,
                         model.warmup_requests, model.path.parent)  # fmt: skip
        if new.labels != old.labels:
            log.info("Version labels of %s: %s", self.config.model_name, new.labels)
        if not same_versions:
            self.on_change(self.available_versions())

    def _read_config_file(self) -> dict[str, int] | None:
        """Take the version policy from the config file; return its labels (None without a file or when
        the file cannot be read: the policy and labels in force stay)."""
        path = self.config.model_config_file
        if path is None:
            return None
        try:
            text = Path(path).read_text()
            changed = text != self._config_text
            _, model = parse_model_config(text, self.config.model_name, path)
            policy = VersionConfig.from_proto(model, path)
        except (OSError, ValueError) as error:
            if self._config_text != "":
                log.error("Cannot read the model config %s; keeping the policy and labels in force: %s", path, error)
            self._config_text = ""
            return None
        self._config_text = text
        if changed:
            if Path(model.base_path).resolve() != self.model_dir.resolve():
                log.warning("The model config moved base_path to %s; this server keeps serving %s",
                            model.base_path, self.model_dir)  # fmt: skip
            if (policy.num_versions, policy.specific_versions) != (self._num_versions, self._specific_versions):
                log.info("Version policy of %s from %s: %s", self.config.model_name, path,
                         _policy_text(policy.num_versions, policy.specific_versions))  # fmt: skip
            self._num_versions = policy.num_versions
            self._specific_versions = policy.specific_versions
        return policy.labels

    def _load(self, model_dir: Path, version: int) -> LoadedVersion | None:
        """Load and warm up a version of `model_dir` (LOADING while it runs); it is served by `_commit`.

        A failure is logged, reported END with its error and recorded so that the version is never retried.
        """
        path = model_dir / str(version)
        self._set_state(version, _STATE.LOADING)
        log.info("Loading %s version %d from %s", self.config.model_name, version, path)
        started = time.monotonic()
        try:
            loaded = load_version(path, version)
            warmed = loaded.warmup_requests = run_warmup(loaded, self.config.model_name)
        except Exception as error:  # noqa: BLE001  (whatever breaks a version, the others keep serving)
            self._failed.add((model_dir.resolve(), version))
            code = error.code if isinstance(error, RequestError) else grpc.StatusCode.UNKNOWN
            if isinstance(error, tf.errors.OpError):
                code = _grpc_code(error.error_code)
            self._set_state(version, _STATE.END, code.value[0], f"Failed to load version {version}: {error}")
            log.error("Loading %s version %d failed (%s); keeping %s: %s", self.config.model_name, version,
                      path, self.available_versions(), error)  # fmt: skip
            return None
        log.info("Loaded %s version %d (%.1f s, %d warm-up requests)", self.config.model_name, version,
                 time.monotonic() - started, warmed)  # fmt: skip
        return loaded

    def _unload(self, version: int) -> None:
        self._set_state(version, _STATE.UNLOADING)
        with self._lock:
            available = {v: m for v, m in self._serving.available.items() if v != version}
            self._serving = _Serving(available, self._serving.labels)
        self._set_state(version, _STATE.END)
        log.info("Unloaded %s version %d", self.config.model_name, version)

    def _set_state(self, version: int, state: int, error_code: int = 0, message: str = "") -> None:
        with self._lock:
            self._states[version] = (state, error_code, message)

    def unload_all(self) -> None:
        for version in self.available_versions():
            self._unload(version)

    def resolve(self, model_spec) -> LoadedVersion:
        """The loaded version a ModelSpec asks for.

        Raises:
            RequestError: NOT_FOUND (unknown model, version not loaded), INVALID_ARGUMENT (unknown label).
        """
        name = model_spec.name
        serving = self._serving  # one snapshot: a label and the versions it may name
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            label = model_spec.version_label
            if name != self.config.model_name or label not in serving.labels:
                raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
            version = serving.labels[label]
        elif choice == "version":
            version = model_spec.version.value
        else:
            version = None
        available = serving.available
        if name == self.config.model_name:
            if version is None and available:
                return available[max(available)]
            if version in available:
                return available[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")

    def status(self, model_spec) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every version seen, or the one asked for."""
        name = model_spec.name
        with self._lock:
            states = dict(self._states)
        if name != self.config.model_name or not states:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version_label":
            labels = self._serving.labels
            if model_spec.version_label not in labels:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {model_spec.version_label}"
                )
            versions = [labels[model_spec.version_label]]
        elif choice == "version":
            versions = [model_spec.version.value]
        else:
            versions = sorted(states, reverse=True)
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            if version not in states:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {name}")
            state, error_code, message = states[version]
            entry = response.model_version_status.add(version=version, state=state)
            entry.status.error_code = error_code
            entry.status.error_message = message
        return response


class _Metrics:
    """Prometheus counters and latency of the gRPC methods, in the server's own registry."""

    def __init__(self):
        import prometheus_client

        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "serving_requests", "gRPC requests by method and status code.", ["model", "method", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = prometheus_client.Histogram(
            "serving_request_latency_seconds", "gRPC request latency.", ["model", "method"], registry=self.registry
        )
        self.rows = prometheus_client.Counter("serving_predict_rows", "Rows scored.", ["model"], registry=self.registry)
        self.available = prometheus_client.Gauge(
            "serving_model_version_available", "Newest available version (0 when none).", ["model"],
            registry=self.registry,
        )  # fmt: skip


class _Handlers(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """PredictionService and ModelService methods; each turns a RequestError into its status code."""

    def __init__(self, manager: ModelManager, metrics: _Metrics):
        self.manager = manager
        self.metrics = metrics
        self._in_flight = 0  # requests in a handler now
        self._draining = False
        self._in_flight_changed = threading.Condition()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests with UNAVAILABLE from now on; wait up to `timeout` s for those in flight to end.

        Returns whether none is left. gRPC's own stop comes after this: a request it refuses while shutting down
        may reach the client as CANCELLED rather than UNAVAILABLE, so the refusing is done here first.
        """
        with self._in_flight_changed:
            self._draining = True
            return self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout)

    def _handle(self, method: str, context: grpc.ServicerContext, body):
        started = time.monotonic()
        code = grpc.StatusCode.OK
        with self._in_flight_changed:
            refused = self._draining
            self._in_flight += not refused
        try:
            if refused:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "The server is shutting down")
            return body()
        except RequestError as error:
            code = error.code
            context.abort(error.code, error.message)
        except Exception as error:
            code = grpc.StatusCode.INTERNAL
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
        finally:
            model = self.manager.config.model_name
            self.metrics.requests.labels(model, method, code.name).inc()
            self.metrics.latency.labels(model, method).observe(time.monotonic() - started)
            if not refused:
                with self._in_flight_changed:
                    self._in_flight -= 1
                    self._in_flight_changed.notify_all()

    def Predict(self, request, context):
        def body():
            limit = self.manager.config.max_request_bytes
            if limit and request.ByteSize() > limit:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Request of {request.ByteSize()} bytes exceeds the limit of {limit}",
                )
            model = self.manager.resolve(request.model_spec)
            response = run_predict(model, self.manager.config.model_name, request, self.manager.config.max_batch_rows)
            first_dims = [tensor.tensor_shape.dim for tensor in request.inputs.values()][:1]
            rows = first_dims[0][0].size if first_dims and first_dims[0] else 1
            self.metrics.rows.labels(self.manager.config.model_name).inc(rows)
            return response

        return self._handle("Predict", context, body)

    def GetModelMetadata(self, request, context):
        def body():
            fields = list(request.metadata_field)
            if not fields:
                raise RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for name in fields:
                if name != "signature_def":
                    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"Metadata field {name} is not supported")
            model = self.manager.resolve(request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = self.manager.config.model_name
            response.model_spec.version.value = model.version
            response.metadata["signature_def"].Pack(model.signature_def_map)
            return response

        return self._handle("GetModelMetadata", context, body)

    def GetModelStatus(self, request, context):
        return self._handle("GetModelStatus", context, lambda: self.manager.status(request.model_spec))

    def HandleReloadConfigRequest(self, request, context):
        """Take the served model's policy, labels and base path from a ModelServerConfig; the outcome is in the
        response's StatusProto, as TF Serving reports it (the RPC itself succeeds)."""

        def body():
            code, message = self._reload(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.error_code = code.value[0]
            response.status.error_message = message
            return response

        return self._handle("HandleReloadConfigRequest", context, body)

    def _reload(self, config) -> tuple[grpc.StatusCode, str]:
        if config.WhichOneof("config") != "model_config_list":
            return grpc.StatusCode.INVALID_ARGUMENT, "ModelServerConfig must hold a model_config_list"
        models = list(config.model_config_list.config)
        names = [model.name for model in models]
        if names != [self.manager.config.model_name]:
            return (grpc.StatusCode.UNIMPLEMENTED,
                    f"This server serves one model, {self.manager.config.model_name}. Received: {names}")  # fmt: skip
        return self.manager.reload_config(models[0])


class ModelServer:
    """The server: gRPC services, health, and a thread that polls the model folder.

    Usable in-process (tests):

        server = ModelServer(ServerConfig(base_path=str(tmp), port=0))
        port = server.start()
        ...
        server.stop()
    """

    def __init__(self, config: ServerConfig, server_credentials: grpc.ServerCredentials | None = None):
        if config.num_versions < 1:
            raise ValueError(f"`num_versions` must be at least 1. Received: `num_versions={config.num_versions}`")
        if config.poll_interval_s <= 0:
            raise ValueError(
                f"`poll_interval_s` must be positive. Received: `poll_interval_s={config.poll_interval_s}`"
            )
        self.config = config
        self.server_credentials = server_credentials
        self.manager = ModelManager(config)
        self.metrics = _Metrics()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        self.manager.on_change = self._on_versions_changed
        self.port: int | None = None
        self._server: grpc.Server | None = None
        self._thread_pool: futures.ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._metrics_http = None

    def start(self) -> int:
        """Load the versions on disk, bind, start serving and polling; returns the bound port."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.manager.poll()
        options = [
            ("grpc.max_send_message_length", self.config.max_message_bytes),
            ("grpc.max_receive_message_length", self.config.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self._thread_pool = futures.ThreadPoolExecutor(
            self.config.max_workers, thread_name_prefix=f"{self.config.model_name}-grpc"
        )
        server = grpc.server(self._thread_pool, options=options)
        handlers = self._handlers = _Handlers(self.manager, self.metrics)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(handlers, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(handlers, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.config.host}:{self.config.port}"
        if self.server_credentials is not None:
            port = server.add_secure_port(address, self.server_credentials)
        else:
            port = server.add_insecure_port(address)
        if not port:
            raise RuntimeError(f"Could not bind {address}")
        server.start()
        self._server, self.port = server, port
        if self.config.metrics_port is not None:
            import prometheus_client

            self._metrics_http, _ = prometheus_client.start_http_server(
                self.config.metrics_port, addr=self.config.host, registry=self.metrics.registry
            )
        self._watcher = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._watcher.start()
        log.info("Serving %s from %s on %s:%d", self.config.model_name, self.manager.model_dir, self.config.host, port)
        return port

    def stop(self, grace: float | None = None) -> None:
        """Stop polling, report NOT_SERVING, let in-flight requests finish (`grace` seconds), unload.

        New requests are refused with UNAVAILABLE once polling has stopped (`_Handlers.drain`); gRPC is stopped
        when the requests in flight are done or the grace period is over. A handler still running then (its call
        cancelled) is waited for before the versions are unloaded, so `stop` can outlast `grace` by one handler's
        run. Calling it again does nothing.
        """
        if self._server is None:
            return
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.join()
        grace = self.config.grace_s if grace is None else grace
        deadline = time.monotonic() + grace
        self._handlers.drain(grace)
        self._server.stop(max(0.0, deadline - time.monotonic())).wait()
        self._server = None
        # gRPC never shuts its pool down (idle handler threads would last until garbage collection); waiting also
        # lets a handler whose call gRPC cancelled finish before its version is unloaded.
        self._thread_pool.shutdown()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None
        self.manager.unload_all()
        log.info("Stopped serving %s", self.config.model_name)

    def wait(self) -> None:
        """Block until the server terminates."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _watch(self) -> None:
        while not self._stopping.wait(self.config.poll_interval_s):
            try:
                self.manager.poll()
            except Exception:
                log.exception("Polling %s failed", self.manager.model_dir)

    def _on_versions_changed(self, available: list[int]) -> None:
        self.metrics.available.labels(self.config.model_name).set(max(available, default=0))
        status = health_pb2.HealthCheckResponse.SERVING if available else health_pb2.HealthCheckResponse.NOT_SERVING
        self._set_health(status)

    def _set_health(self, status) -> None:
        for service in (*_HEALTH_SERVICES, self.config.model_name):
            self.health.set(service, status)


def main(argv: list[str] | None = None) -> None:
    """`python -m serving.server`: serve one model until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-path", help="folder holding <model-name>/<version>/")
    parser.add_argument("--model-name", default="deepfm")
    parser.add_argument(
        "--model-config-file",
        help="TF Serving model config, read again on every poll (policy, labels); replaces --base-path/--model-name",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--poll-interval-s", type=float, default=1.0)
    parser.add_argument("--num-versions", type=int, default=1, help="latest-N version policy")
    parser.add_argument("--version-label", action="append", default=[], metavar="LABEL=VERSION")
    parser.add_argument("--max-batch-rows", type=int, default=0, help="refuse larger requests; 0 for no limit")
    parser.add_argument("--max-request-bytes", type=int, default=0, help="refuse larger requests; 0 for no limit")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics over HTTP on this port")
    parser.add_argument("--grace-s", type=float, default=5.0)
    parser.add_argument("--tls-cert", help="PEM certificate chain; with --tls-key, serve over TLS")
    parser.add_argument("--tls-key", help="PEM private key")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    labels = {}
    for item in args.version_label:
        label, _, version = item.partition("=")
        if not version.isdecimal():
            parser.error(f"--version-label must be LABEL=VERSION. Received: {item!r}")
        labels[label] = int(version)
    settings: dict[str, Any] = {
        "host": args.host, "port": args.port, "poll_interval_s": args.poll_interval_s,
        "max_batch_rows": args.max_batch_rows, "max_request_bytes": args.max_request_bytes, "metrics_port": args.metrics_port, "grace_s": args.grace_s,
    }  # fmt: skip
    if args.model_config_file:
        config = ServerConfig.from_model_config_file(args.model_config_file, **settings)
    elif args.base_path:
        config = ServerConfig(
            base_path=args.base_path, model_name=args.model_name, num_versions=args.num_versions,
            version_labels=labels, **settings,
        )  # fmt: skip
    else:
        parser.error("pass --base-path or --model-config-file")
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        credentials = grpc.ssl_server_credentials([(Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())])

    server = ModelServer(config, credentials)
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
