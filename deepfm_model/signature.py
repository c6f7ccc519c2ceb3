"""The `serving_default` signature of a SavedModel export, read without loading it, and how two of them differ.

The release stage compares a candidate's signature with the serving model's before it compares their AUCs: a
model whose inputs changed cannot replace the old one behind the same clients unless the change is deliberate.
"""

from __future__ import annotations

from pathlib import Path

Signature = dict[str, dict[str, str]]


def export_signature(export_dir: Path) -> Signature | None:
    """`{"inputs": {name: "dtype[shape]"}, "outputs": {...}}` of the `serving_default` signature, read from the
    SavedModel protobuf without loading the graph; `None` when there is no SavedModel or no such signature."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    from deepfm_model.predict import SIGNATURE_KEY

    saved = saved_model_pb2.SavedModel()
    if (export_dir / "saved_model.pb").is_file():
        saved.ParseFromString((export_dir / "saved_model.pb").read_bytes())
    elif (export_dir / "saved_model.pbtxt").is_file():
        text_format.Parse((export_dir / "saved_model.pbtxt").read_text(), saved)
    else:
        return None

    def tensor(info) -> str:
        shape = "?" if info.tensor_shape.unknown_rank else ",".join(str(d.size) for d in info.tensor_shape.dim)
        return f"{tf.as_dtype(info.dtype).name}[{shape}]"

    for meta_graph in saved.meta_graphs:
        if SIGNATURE_KEY in meta_graph.signature_def:
            signature = meta_graph.signature_def[SIGNATURE_KEY]
            return {
                "inputs": {name: tensor(info) for name, info in sorted(signature.inputs.items())},
                "outputs": {name: tensor(info) for name, info in sorted(signature.outputs.items())},
            }
    return None


def signature_diff(serving: Signature, candidate: Signature) -> dict:
    """Per side ("inputs", "outputs"), the names only the candidate has (`added`), only the serving model has
    (`removed`), and those whose dtype/shape changed (`changed`: name -> [serving, candidate]); empty if equal."""
    diff = {}
    for side in ("inputs", "outputs"):
        old, new = serving.get(side, {}), candidate.get(side, {})
        parts = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": {name: [old[name], new[name]] for name in sorted(set(old) & set(new)) if old[name] != new[name]},
        }
        parts = {kind: value for kind, value in parts.items() if value}
        if parts:
            diff[side] = parts
    return diff


def describe_diff(diff: dict) -> str:
    """One line for a `signature_diff`: `inputs added: a, b; outputs changed: p float32[?,1] -> float64[?,1]`."""
    parts = []
    for side, kinds in diff.items():
        for kind, value in kinds.items():
            if kind == "changed":
                value = [f"{name} {old} -> {new}" for name, (old, new) in value.items()]
            parts.append(f"{side} {kind}: {', '.join(value)}")
    return "; ".join(parts)
