"""A loaded SavedModel version: its signatures, their input specs, and how a signature is called."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorflow as tf
from tensorflow.python.saved_model import loader_impl
from tensorflow_serving.apis import get_model_metadata_pb2


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
    signature on every call. The flat calling convention it ends in takes the inputs in `_arg_keywords` order,
    and `_arg_keywords` are the SignatureDef names; that convention (TensorFlow's private `_call_flat`) is used
    directly when the function exposes it, which the signatures of a loaded SavedModel do; otherwise, or with
    `flat_call=False`, the public call is used (with the structured names). `python -m dags.ops.bench.serving`
    times both on the same model and requests ("signature_call"): on the sample model the flat call took 41 us
    against 171 us for the public call, and a whole `run_predict` 220 us against 383 us (2 CPUs, TF 2.21), so
    it stays while a run of the benchmark shows that gain.

    Args:
        function: a signature of a loaded SavedModel (`module.signatures[key]`).
        signature_def: its SignatureDef; without it the public call is used.
        flat_call: use the flat calling convention when the function exposes it.
    """

    def __init__(self, function, signature_def=None, *, flat_call: bool = True):
        self.function = function
        order = getattr(function, "_arg_keywords", None)
        def_inputs = dict(signature_def.inputs) if signature_def is not None else {}
        self.uses_flat_call = (flat_call and hasattr(function, "_call_flat") and order is not None and bool(def_inputs)
                      and sorted(order) == sorted(def_inputs))  # fmt: skip
        if self.uses_flat_call:
            self.inputs = {name: _input_spec(def_inputs[name]) for name in order}
        else:
            specs: dict[str, tf.TensorSpec] = function.structured_input_signature[1]
            self.inputs = {
                name: InputSpec(spec.dtype, None if spec.shape.rank is None else tuple(spec.shape.as_list()))
                for name, spec in specs.items()
            }
        self.output_names = tuple(function.structured_outputs)

    def __call__(self, tensors: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        if self.uses_flat_call:
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
